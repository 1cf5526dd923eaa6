// Command handler is the upstream of an of-watchdog test image (mode=http):
// it answers every request with status 201, header X-Fn: yes and a binary
// body, the bytes 0..255 followed by the request body, so a test sees that
// status, headers and bytes pass through unchanged.
package main

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
)

func main() {
	// of-watchdog passes its environment on: listen where it forwards to.
	addr := "127.0.0.1:8082"
	if u, err := url.Parse(os.Getenv("upstream_url")); err == nil && u.Host != "" {
		addr = u.Host
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("handler listening on %s", ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(handle)))
}

func handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	all := make([]byte, 256, 256+len(body))
	for i := range all {
		all[i] = byte(i)
	}
	w.Header().Set("X-Fn", "yes")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusCreated)
	w.Write(append(all, body...))
}
