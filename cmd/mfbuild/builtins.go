package main

import "flag"

// registerBuiltins adds --functions (which built-in functions, and so which
// service clients, the worker binary carries) and --compress.
func (c *common) registerBuiltins(fs *flag.FlagSet) {
	fs.StringVar(&c.builtins, "functions", "all", "built-in functions the worker carries: all, compute (no service clients: smallest image) or a comma-separated list of names (with the clients they need); see docs/performance.md")
	fs.StringVar(&c.compress, "compress", "none", "x86 initramfs compression: none or gzip (smaller, slower to unpack under TCG; see docs/performance.md)")
}
