// Command fwatchdog stands in for an OpenFaaS watchdog in tests: an HTTP
// server on $port that answers with a custom status, a header and a
// binary body, and logs each call on stderr. X-Instance names the process
// (its start time), so a test sees whether a watchdog was kept.
//
//	GET /exit      logs "dying" and exits 3 before answering
//	GET /internal  answers 502 marked X-OpenFaaS-Internal (the watchdog's own error)
//	GET /own500    answers 500 unmarked (the function's error)
//	STARTING=N     the first N calls get /internal's answer, as of-watchdog
//	               answers while its function is not up yet
//	MODE=nolisten  never listens (the worker must give up at the deadline)
//	MODE=die       exits 4 at once, having logged "cannot start"
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	switch os.Getenv("MODE") {
	case "nolisten":
		fmt.Fprintln(os.Stderr, "starting slowly")
		select {}
	case "die":
		fmt.Fprintln(os.Stderr, "cannot start")
		os.Exit(4)
	}
	instance := strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(os.Stderr, "listening on %s as uid %d\n", os.Getenv("port"), os.Getuid())
	starting, _ := strconv.Atoi(os.Getenv("STARTING"))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if starting > 0 || r.URL.Path == "/internal" {
			starting--
			fmt.Fprintln(os.Stderr, "upstream not up")
			w.Header().Set("X-OpenFaaS-Internal", "fwatchdog")
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if r.URL.Path == "/own500" {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte("own error"))
			return
		}
		fmt.Fprintf(os.Stderr, "call %s %s query=%s x-in=%s len=%d\n", r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("X-In"), len(body))
		if r.URL.Path == "/exit" {
			fmt.Fprintln(os.Stderr, "dying")
			os.Exit(3)
		}
		w.Header().Set("X-Out", strings.ToUpper(r.Header.Get("X-In")))
		w.Header().Set("X-Instance", instance)
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusTeapot)
		// A binary body: every byte value, then the request body reversed.
		out := make([]byte, 0, 256+len(body))
		for i := 0; i < 256; i++ {
			out = append(out, byte(i))
		}
		for i := len(body) - 1; i >= 0; i-- {
			out = append(out, body[i])
		}
		w.Write(out)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("port"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
