// Command netprobe is a user function for the network attack test: it
// dials every address it is given and reports, per address, what the
// server said first or why the connection failed.
//
// Request (stdin, JSON): {"dial": ["HOST:PORT", ...], "timeout_ms": N}.
// Response (stdout, JSON): {"HOST:PORT": "ok: <first bytes>" | "ERR: ...", ...}.
package main

import (
	"encoding/json"
	"net"
	"os"
	"time"
)

func main() {
	var req struct {
		Dial      []string
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
	json.NewEncoder(os.Stdout).Encode(out)
}
