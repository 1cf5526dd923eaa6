package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/microfaas/microfaas/orchestrator/httpguard"
)

// Client calls a running mforch's deploy routes (Store.Handler). Its
// errors say which flag to fix and never show the credentials.
type Client struct {
	HTTP *http.Client // default: http.DefaultClient
	API  httpguard.Endpoint
}

// Deploy deploys image as name and returns the record mforch made.
func (c Client) Deploy(ctx context.Context, name, image string) (Record, error) {
	body, _ := json.Marshal(Request{Image: image})
	var rec Record
	err := c.do(ctx, http.MethodPut, "/functions/"+url.PathEscape(name), body, http.StatusOK, &rec)
	return rec, err
}

// Delete removes the deployment name.
func (c Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/functions/"+url.PathEscape(name), nil, http.StatusNoContent, nil)
}

// List returns the deployments.
func (c Client) List(ctx context.Context) ([]Record, error) {
	var recs []Record
	err := c.do(ctx, http.MethodGet, "/functions", nil, http.StatusOK, &recs)
	return recs, err
}

func (c Client) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	client := c.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.API.String()+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.API.Authorize(req)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("is mforch serve running at %s? %w", c.API, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return c.API.Unauthorized()
	case resp.StatusCode == want:
	case resp.StatusCode == http.StatusNotFound && !strings.Contains(string(b), ErrNotDeployed.Error()):
		// An OpenFaaS gateway on the same host holds :8080, the default.
		return fmt.Errorf("%s%s: 404 Not Found: that is not mforch's API (an OpenFaaS gateway listens on :8080); pass --addr with mforch serve's --http address", c.API, path)
	default:
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s%s: %w", c.API, path, err)
	}
	return nil
}

// WriteRecords prints deployments for a terminal: one line per
// deployment and architecture.
func WriteRecords(w io.Writer, recs []Record) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tIMAGE\tARCH\tPLATFORM\tIMAGE DIGEST\tBUNDLE\tSIZE\tWATCHDOG")
	for _, r := range recs {
		for _, a := range sortedKeys(r.Archs) {
			x := r.Archs[a]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%v\n", r.Name, r.Image, a, x.Platform, short(x.ImageDigest), short(x.Bundle.Digest), x.Bundle.Size, r.Watchdog)
		}
	}
	tw.Flush()
}

// short cuts a digest to sha256: and 12 hex digits, as docker prints ids.
func short(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}
