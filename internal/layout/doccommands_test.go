package layout

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docLine is one shell command line of a page, continuations joined.
type docLine struct {
	page string
	line int
	text string
}

// docCommandLines returns the shell lines of a Markdown page: every line of
// a ```sh block, and the "$ " lines of other blocks (a transcript), with
// backslash continuations joined and comments dropped.
func docCommandLines(page, text string) []docLine {
	var out []docLine
	inBlock, isSh := false, false
	var cur *docLine
	for i, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "```") {
			inBlock, isSh, cur = !inBlock, strings.TrimSpace(l[3:]) == "sh", nil
			continue
		}
		if !inBlock {
			continue
		}
		if cur == nil {
			switch {
			case isSh:
			case strings.HasPrefix(l, "$ "):
				l = strings.TrimPrefix(l, "$ ")
			default:
				continue
			}
			out = append(out, docLine{page: page, line: i + 1})
			cur = &out[len(out)-1]
		}
		cont := strings.HasSuffix(l, "\\")
		cur.text += strings.TrimSuffix(l, "\\") + " "
		if !cont {
			cur.text = stripComment(cur.text)
			cur = nil
		}
	}
	return out
}

// stripComment drops a shell comment (" #" outside quotes).
func stripComment(s string) string {
	var quote rune
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (i == 0 || s[i-1] == ' '):
			return strings.TrimSpace(s[:i])
		}
	}
	return strings.TrimSpace(s)
}

var programs = map[string]bool{"mfbuild": true, "mforch": true, "mfinit": true}

// ourCommands returns the calls of our programs in a shell line, each as
// "prog sub rest..." up to the next shell operator, and the programs called
// bare (without bin/) at the start of a command.
func ourCommands(text string) (calls [][]string, bare []string) {
	f := strings.Fields(text)
	start := true // at the start of a command
	for i := 0; i < len(f); i++ {
		w := f[i]
		if strings.HasPrefix(w, "(") { // "(bin/mforch" starts a subshell's command
			w, start = strings.TrimLeft(w, "("), true
		}
		if start && programs[w] {
			bare = append(bare, w)
		}
		if prog, ok := strings.CutPrefix(w, "bin/"); ok && programs[prog] {
			call := []string{prog}
			for i++; i < len(f) && !isOperator(f[i]); i++ {
				call = append(call, strings.TrimRight(f[i], ";)"))
				if strings.HasSuffix(f[i], ";") || strings.HasSuffix(f[i], ")") {
					break
				}
			}
			calls = append(calls, call)
			start = true
			continue
		}
		start = isOperator(w) || w == "(" || w == "time" || strings.HasSuffix(w, ";")
	}
	return calls, bare
}

func isOperator(w string) bool {
	switch w {
	case "&&", "||", "|", ";", "&", ")":
		return true
	}
	return false
}

var (
	varUseRE    = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)(:-)?`)
	varAssignRE = regexp.MustCompile(`(?:^|[;&|(]\s*|\bexport\s+)([A-Za-z_][A-Za-z0-9_]*)=`)
	singleQuote = regexp.MustCompile(`'[^']*'`)
	modeRE      = regexp.MustCompile(`^[a-z]+(\|[a-z]+)*$`)
)

// shellVars are the variables a shell has without the page setting them.
var shellVars = map[string]bool{"HOME": true, "PWD": true, "PATH": true, "USER": true}

// TestDocCommandsExist builds the three programs and fails when a command
// line of a page of docs/ (a ```sh block, or a "$ " line of a transcript)
// calls one of them bare instead of as bin/NAME, names a subcommand or a
// --flag the program does not have, or uses a shell variable the page has
// not set before. It checks names only: a walkthrough's run is
// TestOpenFaaSGateway's (orchestrator/openfaas) and the e2e tests'.
func TestDocCommandsExist(t *testing.T) {
	root := strings.TrimSpace(run(t, "", "go", "list", "-m", "-f", "{{.Dir}}"))
	pages, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	var lines []docLine
	for _, page := range pages {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, page)
		lines = append(lines, docCommandLines(rel, string(raw))...)
	}
	if len(lines) == 0 {
		t.Fatal("no command lines found in docs/*.md")
	}

	// Variables first: they need no build.
	set := map[string]map[string]bool{}
	for _, l := range lines {
		if set[l.page] == nil {
			set[l.page] = map[string]bool{}
		}
		unquoted := singleQuote.ReplaceAllString(l.text, "''")
		for _, m := range varUseRE.FindAllStringSubmatch(unquoted, -1) {
			if !shellVars[m[1]] && !set[l.page][m[1]] && m[2] == "" {
				t.Errorf("%s:%d uses $%s, which the page does not set before: %s", l.page, l.line, m[1], l.text)
			}
		}
		for _, m := range varAssignRE.FindAllStringSubmatch(unquoted, -1) {
			set[l.page][m[1]] = true
		}
	}

	if testing.Short() {
		t.Skip("builds the programs")
	}
	bin := t.TempDir()
	run(t, root, "go", "build", "-o", bin+"/", "./cmd/mfbuild", "./cmd/mforch", "./cmd/mfinit")
	help := func(args ...string) string {
		out, _ := exec.Command(filepath.Join(bin, args[0]), args[1:]...).CombinedOutput() // -h exits 0 or 2
		return string(out)
	}
	checked := 0
	for _, l := range lines {
		calls, bare := ourCommands(l.text)
		for _, prog := range bare {
			t.Errorf("%s:%d calls %s bare; write bin/%s (make build puts it there): %s", l.page, l.line, prog, prog, l.text)
		}
		for _, f := range calls {
			if len(f) < 2 {
				t.Errorf("%s:%d: %s without a subcommand", l.page, l.line, f[0])
				continue
			}
			prog, sub := f[0], f[1]
			usage := help(prog, sub, "-h")
			if strings.Contains(usage, "unknown command") {
				t.Errorf("%s:%d names %s %s, which %s does not have", l.page, l.line, prog, sub, prog)
				continue
			}
			if prog == "mfinit" {
				usage = help(prog, "--help")
			}
			if len(f) > 2 && modeRE.MatchString(f[2]) {
				// "image sdcard --debug": the mode's own flags
				usage += help(prog, sub, strings.Split(f[2], "|")[0], "-h")
			}
			for _, m := range flagRE.FindAllStringSubmatch(strings.Join(f[2:], " "), -1) {
				if !strings.Contains(usage, "-"+m[2]) {
					t.Errorf("%s:%d shows %s %s --%s, which `%s %s -h` does not list", l.page, l.line, prog, sub, m[2], prog, sub)
				}
			}
			checked++
		}
	}
	t.Logf("%d calls of bin/mfbuild, bin/mforch, bin/mfinit checked in docs/*.md", checked)
}

// TestDocCommandLines pins the extraction: continuations, transcripts,
// comments, operators, bare calls and variables.
func TestDocCommandLines(t *testing.T) {
	page := "x\n```sh\nbin/mforch serve --http a \\\n  --workers 2 &   # bg\nP=$(cat f)\nmforch status\n```\n" +
		"```\n$ curl -u admin:$P x | grep -o '$1'\nout $Q\n```\n"
	lines := docCommandLines("p.md", page)
	want := []string{"bin/mforch serve --http a    --workers 2 &", "P=$(cat f)", "mforch status", "curl -u admin:$P x | grep -o '$1'"}
	if len(lines) != len(want) {
		t.Fatalf("lines %+v", lines)
	}
	for i, l := range lines {
		if l.text != want[i] {
			t.Errorf("line %d: %q, want %q", i, l.text, want[i])
		}
	}
	calls, bare := ourCommands("time (bin/mforch status --addr x) && mfbuild worker; bin/mfbuild worker --out o")
	if len(calls) != 2 || strings.Join(calls[0], " ") != "mforch status --addr x" || strings.Join(calls[1], " ") != "mfbuild worker --out o" {
		t.Errorf("calls %q", calls)
	}
	if len(bare) != 1 || bare[0] != "mfbuild" {
		t.Errorf("bare %q", bare)
	}
}
