// Package statedir names the folder where mforch keeps what it makes while
// it serves (API credentials, results, worker consoles), so that nothing
// lands in the current folder or in /tmp by surprise.
package statedir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Dir is systemd's StateDirectory ($STATE_DIRECTORY, its first folder),
// else $XDG_STATE_HOME/microfaas, else ~/.local/state/microfaas.
func Dir() (string, error) {
	if d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "microfaas"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state folder (set XDG_STATE_HOME, or give the paths explicitly): %w", err)
	}
	return filepath.Join(home, ".local", "state", "microfaas"), nil
}
