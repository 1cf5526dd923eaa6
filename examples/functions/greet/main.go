// Command greet is an OpenFaaS of-watchdog function in http mode: the
// watchdog (fwatchdog, the image's command) starts it and forwards each
// call to it as an HTTP request. It shows what such a function gets and
// gives back through MicroFaaS: the path and query of the call, a status
// of its choosing, its own headers, and log lines on stderr, which come
// back with the call's result (docs/functions.md, "Deploying at run time").
//
//	GET|POST /hello?name=NAME  200, "hello, NAME", X-Greeted: NAME
//	anything else              404
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
)

func main() {
	// of-watchdog passes its environment on, upstream_url included: listen
	// where it forwards to.
	addr := "127.0.0.1:8082"
	if u, err := url.Parse(os.Getenv("upstream_url")); err == nil && u.Host != "" {
		addr = u.Host
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("greet listening on %s", ln.Addr())
	log.Fatal(http.Serve(ln, http.HandlerFunc(greet)))
}

func greet(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/hello" {
		log.Printf("no such path: %s", r.URL.Path)
		http.Error(w, "no such path: try /hello?name=you", http.StatusNotFound)
		return
	}
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "world"
	}
	log.Printf("greeting %q", name)
	w.Header().Set("X-Greeted", name)
	fmt.Fprintf(w, "hello, %s\n", name)
}
