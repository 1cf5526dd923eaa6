package orchestrator

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// Invocation is one call of a function, from queueing to its result. The
// orchestrator's loop updates it until Done is closed; after that it does
// not change, except PoweredOff, set (before the Recorder sees it) when the
// worker that ran it goes off.
type Invocation struct {
	ID       string
	Function string
	Args     json.RawMessage
	Timeout  time.Duration
	Attempts int
	Worker   string
	// Instance is the mforch instance whose Worker runs it, for one that
	// another instance of a shared queue runs (GET /invocations/ID).
	Instance string
	Boot     protocol.BootTimes
	// LogBoot is the number of Worker's boot that ran it in the workers'
	// logs (Config.WorkerLogs; mforch logs WORKER --boot N), 0 if none.
	LogBoot int
	// The timeline, on the orchestrator's clock.
	Queued     time.Time
	PoweredOn  time.Time // power-on of the worker that ran it
	Connected  time.Time // that worker's hello
	Started    time.Time // job sent
	Finished   time.Time // result (or failure) recorded
	PoweredOff time.Time // the worker went off (or was told to reboot) after it (zero while it stays up for more work)
	Result     json.RawMessage
	// HTTP is the call of a function that serves HTTP (an OpenFaaS
	// watchdog image), sent to it instead of Args; HTTPResponse is its
	// answer (instead of Result).
	HTTP         *protocol.HTTPRequest
	HTTPResponse *protocol.HTTPResponse
	// Log is the tail of the function's stderr (or its watchdog's log) for
	// this call, at most protocol.MaxLog bytes.
	Log string
	// Err is nil on success, else an *Error: errors.Is tells the outcome
	// (ErrFunction, ErrTimeout, ErrWorkerLost, ErrUnavailable, ErrClosed).
	Err      error
	TimedOut bool
	ExecMS   float64
	// Env and Secrets go with the job to the worker (user functions'
	// environment and /var/openfaas/secrets files).
	Env     map[string]string
	Secrets map[string][]byte
	// Restarts counts mforch restarts this invocation survived while
	// pending; with a non-zero Started before a restart it may have run
	// partly, and Attempts says so.
	Restarts int
	// Callback is JobSpec.Callback: it travels with a shared queue's
	// message (sealed), never with a result or a bbolt record.
	Callback []byte

	done chan struct{}
	// energy is set (under the orchestrator's lock) once final; see energy.go.
	energy *InvocationEnergy
	// reserved is the highest attempt whose start is written to the Store
	// (possibly ahead of the start), in loop turn reservedTurn.
	reserved     int
	reservedTurn uint64
	// early: queued before its accepting write is committed (machine.submit).
	early bool
}

// Done is closed when the invocation has finished, with a result or an error.
func (inv *Invocation) Done() <-chan struct{} { return inv.done }

// Outcomes of an invocation that did not succeed. Test with errors.Is on
// Invocation.Err; HTTPStatus maps them to an HTTP status.
var (
	// ErrFunction: the function ran and returned an error.
	ErrFunction = errors.New("function failed")
	// ErrTimeout: the function ran past its timeout.
	ErrTimeout = errors.New("function timed out")
	// ErrWorkerLost: every attempt lost its worker mid-job.
	ErrWorkerLost = errors.New("worker lost mid-job")
	// ErrUnavailable: no worker ran it (none can boot, or the caller
	// withdrew it before one was free).
	ErrUnavailable = errors.New("no worker available")
	// ErrClosed: the orchestrator is shutting down.
	ErrClosed = errors.New("orchestrator is shutting down")
	// ErrQueueFull: the queue holds Config.MaxQueue invocations; try later.
	ErrQueueFull = errors.New("queue full: try again later")
	// ErrUnknownFunction: no worker image has this function.
	ErrUnknownFunction = errors.New("unknown function")
	// ErrBadTimeout: the timeout asked for is beyond Config.MaxTimeout.
	ErrBadTimeout = errors.New("timeout too long")
)

// Error is an invocation's failure: Kind is one of the Err* outcomes,
// Msg says what happened (the function's own message for ErrFunction).
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap makes errors.Is(err, e.Kind) true.
func (e *Error) Unwrap() error { return e.Kind }

func newError(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// HTTPStatus maps an invocation's outcome to the HTTP status both APIs
// (the native one and the OpenFaaS provider) answer with.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrQueueFull):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrUnknownFunction):
		return http.StatusNotFound
	case errors.Is(err, ErrBadTimeout), errors.Is(err, ErrBadID):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrWorkerLost), errors.Is(err, ErrClosed), errors.Is(err, ErrQueueDown):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// errorKinds names the outcomes in the store.
var errorKinds = map[string]error{
	"function": ErrFunction, "timeout": ErrTimeout, "worker_lost": ErrWorkerLost,
	"unavailable": ErrUnavailable, "closed": ErrClosed,
}

func kindName(err error) string {
	for name, k := range errorKinds {
		if errors.Is(err, k) {
			return name
		}
	}
	return ""
}

// ErrText is an invocation error's text, "" for nil (records, the API, experiment results).
func ErrText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// JobSpec is everything an invocation carries to a worker.
type JobSpec struct {
	Function string
	Args     json.RawMessage
	Timeout  time.Duration // 0: Config.JobTimeout
	Env      map[string]string
	Secrets  map[string][]byte
	// HTTP is the call of a function deployed from an OpenFaaS watchdog
	// image: forwarded to it as an HTTP request (Args unused).
	HTTP *protocol.HTTPRequest
	// ID, if set, is the invocation's id, chosen by the caller so that a
	// retried submit is not run twice; only with a shared queue (queue.go).
	ID string
	// Callback is what the submitter needs to act on the result wherever
	// it finishes (the OpenFaaS provider's async callback), opaque here.
	// Only with a shared queue, which carries it with the invocation and
	// hands it to exactly one instance once the result is stored (natsq);
	// a local submit ignores it.
	Callback []byte
}

// newID returns an invocation id: the queueing time in milliseconds (12
// hex digits) then 64 random bits. Ids of invocations queued close
// together sort together, so the store's writes of one commit land on a
// few B+tree pages instead of one random page each.
func newID(at time.Time) string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("%012x", at.UnixMilli()) + hex.EncodeToString(b)
}
