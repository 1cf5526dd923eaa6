package rig

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// openResults opens the results CSV for appending. A file written with
// other columns than columns (an older mforch, or energy accounting
// switched on or off: orchestrator.EnergyCSVHeader) is never appended to,
// which would misalign every new row, nor overwritten: it is renamed
// beside the path with its time and a new file is started. It reports
// whether the caller must write the header.
func openResults(path string, columns []string, now time.Time, log *slog.Logger) (*os.File, bool, error) {
	if first, err := resultsHeader(path); err == nil && first != "" && first != strings.Join(columns, ",") {
		kept := strings.TrimSuffix(path, ".csv") + ".old-" + now.UTC().Format("20060102T150405") + ".csv"
		if err := os.Rename(path, kept); err != nil {
			return nil, false, fmt.Errorf("results file %s has other columns than this mforch writes, and moving it aside failed: %w; move it away or pass another --results", path, err)
		}
		log.Warn("results file had other columns (an older mforch, or energy accounting switched on or off): kept it and started a new one", "kept", kept, "path", path)
	}
	// Owner-only: an error column may quote what a function printed.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("results file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("results file %s: make it owner-only: %w", path, err)
		}
	}
	return f, fi.Size() == 0, nil
}

func resultsHeader(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return "", nil
	}
	return strings.TrimRight(line, "\r\n"), nil
}
