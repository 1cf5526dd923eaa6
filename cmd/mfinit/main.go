// Command mfinit is the MicroFaaS worker. As PID 1 of a worker's initramfs
// it boots the worker (runtime.Boot), serves the orchestrator and powers
// off. Run by hand it runs one function on the host, for developing
// functions:
//
//	mfinit invoke [--functions DIR] NAME 'ARGS_JSON'
//	mfinit functions
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/microfaas/microfaas/runtime"
	"github.com/microfaas/microfaas/runtime/functions"
	"github.com/microfaas/microfaas/runtime/sandbox"
)

const usage = `usage:
  mfinit                         as PID 1: boot the worker (parameters on the kernel command line)
  mfinit invoke [--functions DIR] NAME [ARGS_JSON]
                                 run one function on this host and print its result as JSON;
                                 DIR holds user functions (executables, image folders), run
                                 contained as on a worker (as an ordinary user: in a user
                                 namespace, as yourself)
  mfinit functions               list the built-in functions
`

func main() {
	// A function's sandbox helper is this binary re-executed (runtime/sandbox).
	sandbox.MaybeMain()
	if os.Getpid() == 1 {
		runtime.Boot(context.Background())
		select {} // powering off failed; PID 1 must not exit (the kernel would panic)
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "invoke":
		os.Exit(invoke(os.Args[2:]))
	case "functions":
		for _, n := range functions.Names() {
			fmt.Println(n)
		}
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "mfinit: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func invoke(args []string) int {
	var env functions.Env
	if len(args) >= 2 && (args[0] == "--functions" || args[0] == "-functions") {
		env.FunctionsDir, args = args[1], args[2:]
	}
	if len(args) < 1 || len(args) > 2 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	raw := json.RawMessage("{}")
	if len(args) == 2 {
		if raw = json.RawMessage(args[1]); !json.Valid(raw) {
			fmt.Fprintf(os.Stderr, "mfinit: ARGS_JSON is not valid JSON: %s\n", args[1])
			return 2
		}
	}
	res := runtime.Invoke(context.Background(), env, args[0], raw)
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if res.Error != "" {
		return 1
	}
	return 0
}
