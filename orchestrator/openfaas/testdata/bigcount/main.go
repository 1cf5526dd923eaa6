// Command bigcount is the ~5 MB function of BenchmarkDeployedColdCalls:
// wordcount's job (lines and words of stdin, as JSON) done with more of
// the standard library, as a real function links it: gzip input
// (gzip=1), regexp word splitting, a SHA-256 of the input, and XML or
// text/template output (format=xml, format=template with template=...).
// Every package it imports is reachable at run time, so the linker keeps
// them: about 5.4 MB static (wordcount alone is 2.8 MB).
package main

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"regexp"
	"text/template"
)

func main() {
	var in io.Reader = os.Stdin
	if os.Getenv("gzip") != "" {
		z, err := gzip.NewReader(in)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bigcount:", err)
			os.Exit(1)
		}
		in = z
	}
	word := regexp.MustCompile(`\S+`)
	h := sha256.New()
	lines, words := 0, 0
	sc := bufio.NewScanner(io.TeeReader(in, h))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		lines++
		words += len(word.FindAll(sc.Bytes(), -1))
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "bigcount:", err)
		os.Exit(1)
	}
	out := map[string]any{"lines": lines, "words": words, "sha256": hex.EncodeToString(h.Sum(nil))}
	var err error
	switch os.Getenv("format") {
	case "xml":
		err = xml.NewEncoder(os.Stdout).Encode(struct{ Lines, Words int }{lines, words})
	case "template":
		var t *template.Template
		if t, err = template.New("out").Parse(os.Getenv("template")); err == nil {
			err = t.Execute(os.Stdout, out)
		}
	default:
		err = json.NewEncoder(os.Stdout).Encode(out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bigcount:", err)
		os.Exit(1)
	}
}
