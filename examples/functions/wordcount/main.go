// Command wordcount is an example MicroFaaS user function: it reads the
// request body on stdin and writes a JSON response on stdout, the contract of
// OpenFaaS's classic watchdog. Build it static and add it to the worker:
//
//	CGO_ENABLED=0 go build -o wordcount ./examples/functions/wordcount
//	mfbuild worker --function wordcount=./wordcount
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	words, lines, bytes := 0, 0, 0
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		lines++
		bytes += len(sc.Bytes()) + 1
		inWord := false
		for _, c := range sc.Bytes() {
			space := c == ' ' || c == '\t' || c == '\r'
			if !space && !inWord {
				words++
			}
			inWord = !space
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "wordcount:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]int{"lines": lines, "words": words, "bytes": bytes})
}
