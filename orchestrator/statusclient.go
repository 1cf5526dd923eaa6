package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/microfaas/microfaas/orchestrator/httpguard"
)

// FetchStatus asks a running mforch for its Status (GET /status). Its
// errors say which flag to fix and never show the credentials.
func FetchStatus(ctx context.Context, client *http.Client, api httpguard.Endpoint) (Status, error) {
	var s Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api.String()+"/status", nil)
	if err != nil {
		return s, err
	}
	api.Authorize(req)
	resp, err := client.Do(req)
	if err != nil {
		return s, fmt.Errorf("is mforch serve running at %s? %w", api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return s, api.Unauthorized()
	}
	if resp.StatusCode == http.StatusNotFound {
		// An OpenFaaS gateway on the same host holds :8080, status's default.
		return s, fmt.Errorf("%s/status: 404 Not Found: that is not mforch's API (an OpenFaaS gateway listens on :8080); pass --addr with mforch serve's --http address", api)
	}
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("%s/status: %s", api, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("%s/status: %w", api, err)
	}
	return s, nil
}

// WriteText prints s for a terminal: a table of workers, the queue, and
// the first line of each recent failure.
func (s Status) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tKIND\tSTATE\tFOR")
	for _, w := range s.Workers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", w.ID, w.Kind, w.State, w.For.Round(time.Second))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nqueue depth %d, running %d\n", s.QueueDepth, s.Running)
	s.writeInstallation(w)
	if len(s.RecentFailures) > 0 {
		fmt.Fprintln(w, "\nrecent failures:")
		for _, f := range s.RecentFailures {
			first, _, _ := strings.Cut(f.Error, "\n")
			fmt.Fprintf(w, "  %s %s %s on %s (attempts %d): %s\n", f.At.Format(time.RFC3339), f.ID, f.Function, f.Worker, f.Attempts, first)
		}
	}
}

// writeInstallation prints, with a shared queue, every instance's workers
// and the shared queue's depth.
func (s Status) writeInstallation(w io.Writer) {
	if s.InstallationError != "" {
		fmt.Fprintf(w, "\nthe other instances: %s\n", s.InstallationError)
	}
	if s.SharedQueueDepth == nil {
		return
	}
	fmt.Fprintf(w, "\nshared queue: %d invocations queued or running; %d instances\n", *s.SharedQueueDepth, len(s.Instances))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tWORKER\tKIND\tSTATE\tFOR")
	for _, in := range s.Instances {
		for _, wk := range in.Workers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", in.Name, wk.ID, wk.Kind, wk.State, wk.For.Round(time.Second))
		}
		if len(in.Workers) == 0 {
			fmt.Fprintf(tw, "%s\t-\t\t\t\n", in.Name)
		}
	}
	tw.Flush()
}
