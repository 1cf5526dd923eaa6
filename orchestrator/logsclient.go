package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/microfaas/microfaas/orchestrator/httpguard"
	"github.com/microfaas/microfaas/orchestrator/workerlog"
)

// LogQuery says which worker log FetchLogs asks a running mforch for:
// an invocation's boot, or Worker's boot Boot (0: its latest), from Offset.
type LogQuery struct {
	Worker     string
	Boot       int
	Invocation string
	Offset     int64
}

// FetchLogs asks a running mforch for part of a worker boot's log (GET
// /workers/{id}/logs or /invocations/{id}/logs). Its errors say what to
// fix and never show the credentials.
func FetchLogs(ctx context.Context, client *http.Client, api httpguard.Endpoint, q LogQuery) (workerlog.Chunk, error) {
	var c workerlog.Chunk
	path := "/workers/" + url.PathEscape(q.Worker) + "/logs"
	v := url.Values{}
	if q.Invocation != "" {
		path = "/invocations/" + url.PathEscape(q.Invocation) + "/logs"
	} else if q.Boot > 0 {
		v.Set("boot", fmt.Sprint(q.Boot))
	}
	if q.Offset > 0 {
		v.Set("offset", fmt.Sprint(q.Offset))
	}
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.String()+path, nil)
	if err != nil {
		return c, err
	}
	api.Authorize(req)
	resp, err := client.Do(req)
	if err != nil {
		return c, fmt.Errorf("is mforch serve running at %s? %w", api, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return c, api.Unauthorized()
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return c, fmt.Errorf("%s%s: %s: %s", api, path, resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return c, fmt.Errorf("%s%s: %w", api, path, err)
	}
	return c, nil
}
