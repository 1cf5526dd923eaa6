package power

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// qmp is a minimal client of QEMU's machine protocol (QMP, JSON lines on a
// unix socket): enough to save a VM and to resume a restored one.
type qmp struct {
	conn net.Conn
	r    *bufio.Reader
}

// errQMP is an error QEMU answered a command with.
var errQMP = errors.New("qemu refused a QMP command")

// dialQMP connects to the socket qemu creates at start (retrying until it
// exists or ctx ends) and leaves the greeting's capability negotiation.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			q := &qmp{conn: c, r: bufio.NewReader(c)}
			if deadline, ok := ctx.Deadline(); ok {
				c.SetDeadline(deadline)
			}
			if _, err := q.r.ReadBytes('\n'); err != nil { // {"QMP": {...}}
				c.Close()
				return nil, fmt.Errorf("qmp greeting: %w", err)
			}
			if _, err := q.do("qmp_capabilities", nil); err != nil {
				c.Close()
				return nil, err
			}
			return q, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp %s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// do runs one command and returns its "return" value; events that arrive
// before the answer are skipped.
func (q *qmp) do(cmd string, args any) (json.RawMessage, error) {
	return q.doFD(cmd, args, nil)
}

// doFD is do, passing the open file f along with the command (SCM_RIGHTS),
// as QMP's getfd wants it.
func (q *qmp) doFD(cmd string, args any, f *os.File) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	b = append(b, '\n')
	var err error
	if f != nil {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("qmp %s: a file can only be passed over a unix socket", cmd)
		}
		_, _, err = uc.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = q.conn.Write(b)
	}
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: bad answer %q: %w", cmd, line, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("%w: %s: %s: %s", errQMP, cmd, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}

// status is the VM's run state (query-status: "running", "paused",
// "inmigrate", "postmigrate", ...).
func (q *qmp) status() (string, error) {
	b, err := q.do("query-status", nil)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return s.Status, nil
}

// migration is the state of the outgoing migration (query-migrate:
// "active", "completed", "failed", ...) and its error, if any.
func (q *qmp) migration() (status, errDesc string, err error) {
	b, err := q.do("query-migrate", nil)
	if err != nil {
		return "", "", err
	}
	var s struct {
		Status string `json:"status"`
		Desc   string `json:"error-desc"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return "", "", fmt.Errorf("qmp query-migrate: %w", err)
	}
	return s.Status, s.Desc, nil
}

func (q *qmp) Close() error { return q.conn.Close() }
