package natsq

import (
	"errors"
	"testing"
)

// TestCheckAuth: a NATS server off this host needs credentials; loopback
// servers (tests, one host) do not.
func TestCheckAuth(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"loopback", Options{URLs: "nats://127.0.0.1:4222"}, true},
		{"localhost", Options{URLs: "nats://localhost:4222"}, true},
		{"loopback v6", Options{URLs: "nats://[::1]:4222"}, true},
		{"remote bare", Options{URLs: "nats://10.0.0.5:4222"}, false},
		{"one remote of two", Options{URLs: "nats://127.0.0.1:4222,nats://nats.lab:4222"}, false},
		{"remote with password", Options{URLs: "nats://mforch:secret@10.0.0.5:4222"}, true},
		{"remote with creds", Options{URLs: "nats://10.0.0.5:4222", CredsFile: "/etc/mforch.creds"}, true},
		{"remote with client cert", Options{URLs: "nats://10.0.0.5:4222", TLSCert: "c.pem", TLSKey: "k.pem"}, true},
		{"no host", Options{URLs: "4222"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkAuth(c.opts)
			if c.ok != (err == nil) {
				t.Fatalf("checkAuth: %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("checkAuth: %v, want ErrConfig", err)
			}
		})
	}
}
