// Command upper is a stdin -> stdout function for test images: it writes
// its input upper-cased (ASCII).
package main

import (
	"bytes"
	"io"
	"log"
	"os"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(bytes.ToUpper(in))
}
