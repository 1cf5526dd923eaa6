// Command netprobe is a user function for the network attack test: it
// dials every address it is given and reports, per address, what the
// server said first or why the connection failed.
//
// It also opens, read-write, every file the patterns in "open" match
// (filepath.Glob; a pattern that matches nothing is opened as a path),
// and reports each the same way ("ok: opened" or "ERR: ...").
//
// Request (stdin, JSON): {"dial": ["HOST:PORT", ...], "open": ["/dev/vport*", ...], "timeout_ms": N}.
// Response (stdout, JSON): {"HOST:PORT": "ok: <first bytes>" | "ERR: ...", "PATH": ..., ...}.
package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"time"
)

func main() {
	var req struct {
		Dial      []string
		Open      []string
		TimeoutMS int `json:"timeout_ms"`
	}
	json.NewDecoder(os.Stdin).Decode(&req)
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	out := map[string]string{}
	for _, addr := range req.Dial {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			out[addr] = "ERR: " + err.Error()
			continue
		}
		c.SetDeadline(time.Now().Add(timeout))
		b := make([]byte, 64)
		n, err := c.Read(b)
		c.Close()
		if n == 0 && err != nil {
			out[addr] = "ERR: connected, then " + err.Error()
			continue
		}
		out[addr] = "ok: " + string(b[:n])
	}
	for _, pattern := range req.Open {
		paths, _ := filepath.Glob(pattern)
		if len(paths) == 0 {
			paths = []string{pattern}
		}
		for _, p := range paths {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				out[p] = "ERR: " + err.Error()
				continue
			}
			f.Close()
			out[p] = "ok: opened"
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
