// Command stdinfn is a stdin → stdout function for tests: it tells the
// test it ran (a connection to $RAN_ADDR, when set), logs on stderr and
// echoes its request; the request "fail" makes it exit 2.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	in, _ := io.ReadAll(os.Stdin)
	if a := os.Getenv("RAN_ADDR"); a != "" {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Write([]byte("ran"))
			c.Close()
		}
	}
	fmt.Fprintf(os.Stderr, "stdinfn read %d bytes\n", len(in))
	if string(in) == "fail" {
		fmt.Fprintln(os.Stderr, "asked to fail")
		os.Exit(2)
	}
	fmt.Printf("echo:%s", in)
}
