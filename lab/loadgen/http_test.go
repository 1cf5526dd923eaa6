package loadgen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator"
	"github.com/microfaas/microfaas/orchestrator/httpguard"
)

func TestArrivals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kind    string
		rate    float64
		wantErr string
		check   func([]time.Duration) bool
	}{
		{"burst needs no rate", "burst", 0, "", func(g []time.Duration) bool {
			return !slices.ContainsFunc(g, func(d time.Duration) bool { return d != 0 })
		}},
		{"uniform at 4/s", "uniform", 4, "", func(g []time.Duration) bool {
			return g[0] == 0 && !slices.ContainsFunc(g[1:], func(d time.Duration) bool { return d != 250*time.Millisecond })
		}},
		{"poisson varies, first at once", "poisson", 2, "", func(g []time.Duration) bool { return g[0] == 0 && g[1] != g[2] && g[1] > 0 }},
		{"zero rate", "poisson", 0, "--rate must be positive", nil},
		{"unknown process", "zipf", 1, "--arrival \"zipf\"", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Arrivals(tc.kind, tc.rate, 5, 1)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(g) != 5 || !tc.check(g) {
				t.Errorf("gaps %v, error %v", g, err)
			}
		})
	}
	// One seed, one schedule.
	a, _ := Arrivals("poisson", 2, 20, 7)
	b, _ := Arrivals("poisson", 2, 20, 7)
	if !slices.Equal(a, b) {
		t.Errorf("seed 7 gave two schedules:\n%v\n%v", a, b)
	}
}

func TestSeededCalls(t *testing.T) {
	calls, err := SeededCalls([]string{"float_operations", "cascading_md5"}, 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, c := range calls {
		got = append(got, c.Function)
		if len(c.Args) == 0 {
			t.Errorf("%s: no arguments", c.Function)
		}
	}
	if want := []string{"float_operations", "cascading_md5", "float_operations", "cascading_md5", "float_operations"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	if _, err := SeededCalls([]string{"no_such_function"}, 1, 1); err == nil || !strings.Contains(err.Error(), "no_such_function") {
		t.Errorf("unknown function: error %v", err)
	}
}

func TestHTTPInvoker(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pw, _ := r.BasicAuth()
		switch {
		case user != "admin" || pw != "s3cret":
			http.Error(w, "credentials required", http.StatusUnauthorized)
		case r.URL.Path != "/invoke/float_operations" || r.URL.Query().Get("timeout") != "5s":
			http.Error(w, "wrong route "+r.URL.String(), http.StatusNotFound)
		default:
			json.NewEncoder(w).Encode(orchestrator.InvokeResponse{Function: "float_operations", ExecMS: 12, BootMS: 340})
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, addr, wantErr string
		wantExec            float64
	}{
		{"with credentials", strings.Replace(srv.URL, "http://", "http://admin:s3cret@", 1), "", 12},
		{"without", srv.URL, "401 Unauthorized: credentials required", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api, err := httpguard.NewEndpoint(tc.addr, dir)
			if err != nil {
				t.Fatal(err)
			}
			o := HTTPInvoker(srv.Client(), api, 5*time.Second)(context.Background(), Call{Function: "float_operations", Args: json.RawMessage(`{}`)})
			if o.Err != tc.wantErr || o.ExecMS != tc.wantExec || o.Latency <= 0 {
				t.Errorf("outcome %+v, want error %q and exec %v ms", o, tc.wantErr, tc.wantExec)
			}
		})
	}
}
