package openfaas

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/openfaas/faas-provider/logs"

	"github.com/microfaas/microfaas/orchestrator"
)

// logStore keeps the last messages of each function and streams new ones
// to followers. It is the logs.Requester behind /system/logs.
//
// A finished call gives one message saying which worker ran it, how it
// went and the function's error text, then one message per line of the
// function's own log (its stderr, or its watchdog's log: the tail of at most
// protocol.MaxLog bytes the worker sends with the result).
type logStore struct {
	max       int
	mu        sync.Mutex
	msgs      map[string][]logs.Message
	followers map[string]map[chan logs.Message]struct{}
}

func newLogStore(max int) *logStore {
	return &logStore{max: max, msgs: map[string][]logs.Message{}, followers: map[string]map[chan logs.Message]struct{}{}}
}

// logText is a call's log line.
func logText(id string, inv *orchestrator.Invocation, status int, d time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "call %s (invocation %s", id, inv.ID)
	if inv.Worker != "" {
		fmt.Fprintf(&b, ", worker %s", inv.Worker)
	}
	if inv.Attempts > 1 {
		fmt.Fprintf(&b, ", attempt %d", inv.Attempts)
	}
	fmt.Fprintf(&b, "): %d in %.3f s", status, d.Seconds())
	if inv.Worker != "" {
		fmt.Fprintf(&b, ", exec %.1f ms", inv.ExecMS)
	}
	if !inv.PoweredOn.IsZero() && inv.PoweredOn.After(inv.Queued) {
		fmt.Fprintf(&b, ", worker booted for it (connected %.0f ms after power-on)", float64(inv.Connected.Sub(inv.PoweredOn).Microseconds())/1000)
	}
	if inv.Err != nil {
		fmt.Fprintf(&b, ": %v", inv.Err)
	}
	return b.String()
}

// logLines splits a function's log into its non-empty lines.
func logLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func (s *logStore) add(name, instance string, at time.Time, text string) {
	m := logs.Message{Name: name, Namespace: Namespace, Instance: instance, Timestamp: at.UTC(), Text: text}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := append(s.msgs[name], m)
	if len(l) > s.max {
		l = append([]logs.Message(nil), l[len(l)-s.max:]...)
	}
	s.msgs[name] = l
	for ch := range s.followers[name] {
		select {
		case ch <- m:
		default: // a follower that does not keep up loses messages, not the provider
		}
	}
}

// forget drops a removed function's messages.
func (s *logStore) forget(name string) {
	s.mu.Lock()
	delete(s.msgs, name)
	s.mu.Unlock()
}

// Query implements logs.Requester: the stored messages that match, the
// last Tail of them, then (with Follow) new ones until ctx ends.
func (s *logStore) Query(ctx context.Context, r logs.Request) (<-chan logs.Message, error) {
	if err := checkNamespace(r.Namespace); err != nil {
		return nil, err
	}
	if r.Name == "" {
		return nil, fmt.Errorf("logs: name the function")
	}
	match := func(m logs.Message) bool {
		return (r.Instance == "" || m.Instance == r.Instance) && (r.Since == nil || !m.Timestamp.Before(*r.Since))
	}
	s.mu.Lock()
	var past []logs.Message
	for _, m := range s.msgs[r.Name] {
		if match(m) {
			past = append(past, m)
		}
	}
	if r.Tail > 0 && len(past) > r.Tail {
		past = past[len(past)-r.Tail:]
	}
	var live chan logs.Message
	if r.Follow {
		live = make(chan logs.Message, 64)
		if s.followers[r.Name] == nil {
			s.followers[r.Name] = map[chan logs.Message]struct{}{}
		}
		s.followers[r.Name][live] = struct{}{}
	}
	s.mu.Unlock()

	out := make(chan logs.Message)
	go func() {
		defer close(out)
		if live != nil {
			defer func() {
				s.mu.Lock()
				delete(s.followers[r.Name], live)
				s.mu.Unlock()
			}()
		}
		for _, m := range past {
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
		for live != nil {
			select {
			case m := <-live:
				if !match(m) {
					continue
				}
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
