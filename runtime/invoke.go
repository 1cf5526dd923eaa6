package runtime

import (
	"context"
	"encoding/json"
	"time"

	"github.com/microfaas/microfaas/protocol"
	"github.com/microfaas/microfaas/runtime/functions"
)

// Invoke runs one function on this host (mfinit invoke), contained as on a
// worker when it is a user function, and returns its result as a worker
// reports it, with the time it took.
func Invoke(ctx context.Context, env functions.Env, name string, args json.RawMessage) protocol.Result {
	start := time.Now()
	out, err := RunFunction(ctx, env, name, args, DefaultJobTimeout)
	res := protocol.Result{Function: name, ExecMS: float64(time.Since(start).Microseconds()) / 1000, Result: out}
	if err != nil {
		res.Error = err.Error()
	}
	return res
}
