package functions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// ErrBadArgs is matched (errors.Is) by every error about a job's arguments:
// a missing or mistyped argument, a value out of range, invalid hex, a
// non-square matrix, and so on. The job can never succeed as sent.
var ErrBadArgs = errors.New("bad arguments")

// ErrUnreachable is matched (errors.Is) by errors where a function could not
// connect to the service it needs (refused, timed out, no route, unknown
// host). Retrying later, or fixing the cluster file, may help.
var ErrUnreachable = errors.New("service unreachable")

// ArgError describes one bad argument of one function.
type ArgError struct {
	Func string // function name, e.g. "matmul"
	Arg  string // argument name, e.g. "A"; empty for the arguments as a whole
	Msg  string // what is wrong, e.g. "missing (want a square matrix of numbers)"
}

func (e *ArgError) Error() string {
	if e.Arg == "" {
		return e.Func + ": bad arguments: " + e.Msg
	}
	return e.Func + ": argument " + e.Arg + ": " + e.Msg
}

// Is makes errors.Is(err, ErrBadArgs) true for every *ArgError.
func (e *ArgError) Is(target error) bool { return target == ErrBadArgs }

func argErrorf(fn, arg, format string, a ...any) error {
	return &ArgError{Func: fn, Arg: arg, Msg: fmt.Sprintf(format, a...)}
}

// UnreachableError says that a function could not connect to a service.
type UnreachableError struct {
	Func    string // function name
	Service string // "redis", "postgres", "s3", "kafka"
	Addr    string // the address that was tried
	Err     error  // the underlying network error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s: cannot reach %s at %s: %v", e.Func, e.Service, e.Addr, e.Err)
}

// Unwrap exposes both ErrUnreachable and the underlying error to errors.Is
// and errors.As.
func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// connectError classifies an error from connecting to a service: the
// context's own error if the job was cancelled or ran out of time, an
// *UnreachableError for network-level failures, and a plain wrapped error
// otherwise (for example a wrong password).
func connectError(ctx context.Context, fn, service, addr string, err error) error {
	if ctxErr := jobErr(ctx); ctxErr != nil {
		return fmt.Errorf("%s: connecting to %s at %s: %w (%w)", fn, service, addr, ctxErr, err)
	}
	if isNetworkError(err) {
		return &UnreachableError{Func: fn, Service: service, Addr: addr, Err: err}
	}
	// The job's context is live, so a deadline in err is the connect
	// timeout's: the service did not answer in time. The text is kept but
	// not the chain, so that errors.Is(err, context.DeadlineExceeded) stays
	// a test for the job's own deadline.
	if errors.Is(err, context.DeadlineExceeded) {
		return &UnreachableError{Func: fn, Service: service, Addr: addr,
			Err: fmt.Errorf("no answer within the dial timeout: %v", err)}
	}
	return fmt.Errorf("%s: connecting to %s at %s: %w", fn, service, addr, err)
}

// jobErr returns ctx's error, or context.DeadlineExceeded if its deadline
// has passed and the context has not noticed yet (a socket deadline set to
// the context's deadline fires at the same instant as its timer).
func jobErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

func isNetworkError(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var addrErr *net.AddrError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &addrErr) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}

// opError wraps an error that happened while talking to a service that
// was reached. If the job's context ended, that is said first.
func opError(ctx context.Context, fn, service, op string, err error) error {
	if ctxErr := jobErr(ctx); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%s: %s %s: %w (%w)", fn, service, op, ctxErr, err)
	}
	return fmt.Errorf("%s: %s %s: %w", fn, service, op, err)
}
