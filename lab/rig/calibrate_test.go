package rig

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestOperator(t *testing.T) {
	blocked, w := io.Pipe() // never answered
	defer w.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		in      io.Reader
		ctx     context.Context
		wantErr error
		wantMsg string
	}{
		{"answered", strings.NewReader("\n"), context.Background(), nil, ""},
		{"no answer: stdin closed", strings.NewReader(""), context.Background(), io.EOF, "needs an answer on stdin"},
		{"interrupted while waiting", blocked, cancelled, context.Canceled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := NewOperator(tc.in, &out).PowerOn(tc.ctx)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err %q does not say %q", err, tc.wantMsg)
			}
			if !strings.Contains(out.String(), "Press the power button of ONE board") {
				t.Errorf("prompt %q", out.String())
			}
		})
	}
}

func TestListSensorsNoSensors(t *testing.T) {
	var out bytes.Buffer
	if err := ListSensors(t.TempDir(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "hwmon: no power sensors") {
		t.Errorf("an empty sysfs root: %q", out.String())
	}
}
