package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Fragment is a set of kconfig symbol assignments; "n" means "is not set".
type Fragment map[string]string

var (
	setLine   = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.*)$`)
	unsetLine = regexp.MustCompile(`^# (CONFIG_[A-Za-z0-9_]+) is not set$`)
)

// ParseFragment reads a kconfig fragment: CONFIG_X=v lines and
// "# CONFIG_X is not set" lines; other comments and blank lines are ignored.
// A line that is neither is an error naming it.
func ParseFragment(name string, r io.Reader) (Fragment, error) {
	f := Fragment{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case unsetLine.MatchString(line):
			f[unsetLine.FindStringSubmatch(line)[1]] = "n"
		case strings.HasPrefix(line, "#"):
		case setLine.MatchString(line):
			m := setLine.FindStringSubmatch(line)
			f[m[1]] = m[2]
		default:
			return nil, fmt.Errorf("%s:%d: not a kconfig line: %q", name, n, line)
		}
	}
	return f, sc.Err()
}

// ReadConfig parses a .config file into symbol values ("n" for not set).
func ReadConfig(path string) (Fragment, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return ParseFragment(path, fh)
}

// Merge applies fragment assignments on top of a .config file's text:
// assigned symbols are replaced where they stand, new ones appended in
// sorted order.
func Merge(config string, frag Fragment) string {
	done := map[string]bool{}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(config, "\n"), "\n") {
		sym := ""
		if m := setLine.FindStringSubmatch(line); m != nil {
			sym = m[1]
		} else if m := unsetLine.FindStringSubmatch(line); m != nil {
			sym = m[1]
		}
		if v, ok := frag[sym]; ok && sym != "" {
			b.WriteString(assignment(sym, v) + "\n")
			done[sym] = true
			continue
		}
		b.WriteString(line + "\n")
	}
	var rest []string
	for sym := range frag {
		if !done[sym] {
			rest = append(rest, sym)
		}
	}
	sort.Strings(rest)
	for _, sym := range rest {
		b.WriteString(assignment(sym, frag[sym]) + "\n")
	}
	return b.String()
}

func assignment(sym, v string) string {
	if v == "n" {
		return "# " + sym + " is not set"
	}
	return sym + "=" + v
}

// ErrDroppedSymbol means kconfig did not keep a value a fragment asked for:
// its dependencies are missing or the symbol does not exist in this kernel.
var ErrDroppedSymbol = errors.New("kernel config dropped fragment symbols")

// DroppedError lists every symbol whose final value differs from its fragment.
type DroppedError struct {
	Dropped []Mismatch
}

// Mismatch is one symbol that did not get its requested value.
type Mismatch struct {
	Fragment, Symbol, Want, Got string
}

func (e *DroppedError) Error() string {
	var b strings.Builder
	b.WriteString(ErrDroppedSymbol.Error() + ":")
	for _, m := range e.Dropped {
		got := m.Got
		if got == "" {
			got = "absent"
		}
		fmt.Fprintf(&b, "\n  %s (from %s): want %s, got %s", m.Symbol, m.Fragment, m.Want, got)
	}
	b.WriteString("\n  add the symbols it depends on to the fragment, or remove it (see the symbol's 'depends on' in its Kconfig)")
	return b.String()
}

func (e *DroppedError) Unwrap() error { return ErrDroppedSymbol }

// Check compares a final config against fragments. A fragment's "n" is
// satisfied by an absent symbol.
func Check(final Fragment, frags []NamedFragment) error {
	var bad []Mismatch
	for _, nf := range frags {
		syms := make([]string, 0, len(nf.Fragment))
		for s := range nf.Fragment {
			syms = append(syms, s)
		}
		sort.Strings(syms)
		for _, s := range syms {
			want, got := nf.Fragment[s], final[s]
			if want == "n" && got == "" {
				continue
			}
			if want != got {
				bad = append(bad, Mismatch{nf.Name, s, want, got})
			}
		}
	}
	if len(bad) > 0 {
		return &DroppedError{Dropped: bad}
	}
	return nil
}

// NamedFragment is a fragment with the file it came from.
type NamedFragment struct {
	Name     string
	Fragment Fragment
}

// ErrAbsentPresent means a recipe declares a symbol absent from its series,
// but the configured kernel has it: the declaration is wrong.
var ErrAbsentPresent = errors.New("kernel config has a symbol its recipe declares absent")

// named returns the symbols of list that some fragment names, sorted.
func named(frags []NamedFragment, list []string) []string {
	var out []string
	for _, sym := range list {
		for _, nf := range frags {
			if _, ok := nf.Fragment[sym]; ok {
				out = append(out, sym)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// withoutAbsent returns the fragments without the symbols a series lacks.
func withoutAbsent(frags []NamedFragment, absent []string) []NamedFragment {
	drop := map[string]bool{}
	for _, s := range absent {
		drop[s] = true
	}
	var out []NamedFragment
	for _, nf := range frags {
		f := Fragment{}
		for sym, v := range nf.Fragment {
			if !drop[sym] {
				f[sym] = v
			}
		}
		out = append(out, NamedFragment{Name: nf.Name, Fragment: f})
	}
	return out
}

// CheckAbsent verifies that the symbols a recipe declares absent are not
// defined by any Kconfig file of the tree: a declaration may only excuse a
// symbol the series really lacks, never one kconfig dropped for a reason.
func CheckAbsent(tree string, absent []string) error {
	if len(absent) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, s := range absent {
		want[strings.TrimPrefix(s, "CONFIG_")] = true
	}
	var found []string
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), "Kconfig") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && (f[0] == "config" || f[0] == "menuconfig") && want[f[1]] {
				found = append(found, "CONFIG_"+f[1]+" ("+strings.TrimPrefix(p, tree+"/")+")")
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(found) > 0 {
		sort.Strings(found)
		return fmt.Errorf("%w: %s; remove them from the recipe's absent list, this series has them", ErrAbsentPresent, strings.Join(found, ", "))
	}
	return nil
}
