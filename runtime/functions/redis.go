//go:build !mf_no_redis

package functions

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

func init() {
	Register("redis_insert", redisInsert)
	Register("redis_modify", redisModify)
}

// maxRedisKeyBytes bounds the id argument (a Redis key).
const maxRedisKeyBytes = 1024

// maxRedisReplyBytes bounds a bulk reply the client will read (a GET of a
// huge value must not exhaust the worker's memory).
const maxRedisReplyBytes = 1 << 20

// redisInsert sets key id to balance, then reads it back (SET, GET).
func redisInsert(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "redis_insert"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	id, err := a.name("id", maxRedisKeyBytes)
	if err != nil {
		return nil, err
	}
	balance, err := a.int("balance", -1<<62, 1<<62)
	if err != nil {
		return nil, err
	}
	c, err := dialRedis(ctx, fn, env)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if _, err := c.do(ctx, "SET", id, strconv.FormatInt(balance, 10)); err != nil {
		return nil, opError(ctx, fn, "redis", "SET "+id, err)
	}
	got, err := c.getInt(ctx, id)
	if err != nil {
		return nil, opError(ctx, fn, "redis", "GET "+id, err)
	}
	return map[string]any{"id": id, "balance": got}, nil
}

// redisModify deducts spend from key id (INCRBY id -spend), then reads the
// new balance (GET). A key that does not exist starts at 0, as in Redis.
func redisModify(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "redis_modify"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	id, err := a.name("id", maxRedisKeyBytes)
	if err != nil {
		return nil, err
	}
	spend, err := a.int("spend", 0, 1<<62)
	if err != nil {
		return nil, err
	}
	c, err := dialRedis(ctx, fn, env)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if _, err := c.do(ctx, "INCRBY", id, strconv.FormatInt(-spend, 10)); err != nil {
		return nil, opError(ctx, fn, "redis", "INCRBY "+id, err)
	}
	got, err := c.getInt(ctx, id)
	if err != nil {
		return nil, opError(ctx, fn, "redis", "GET "+id, err)
	}
	return map[string]any{"id": id, "balance": got}, nil
}

// ------------------------------------------------------------------
// A minimal RESP2 client: one connection, one command at a time. It is
// enough for AUTH, SELECT, SET, GET and INCRBY, and keeps the worker binary
// small (a full client library adds over 2 MB).

type redisConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialRedis connects with the "redis" service's settings: addr (host:port,
// required; port 6379 if omitted), password, username (Redis 6 ACLs), db
// (a number, default 0), dial_timeout (a Go duration, default 5s).
func dialRedis(ctx context.Context, fn string, env Env) (*redisConn, error) {
	s, err := env.Service("redis")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	addr, err := requireSetting(fn, "redis", s, "addr")
	if err != nil {
		return nil, err
	}
	if _, _, splitErr := net.SplitHostPort(addr); splitErr != nil {
		addr = net.JoinHostPort(addr, "6379")
	}
	db := 0
	if v := s["db"]; v != "" {
		if db, err = strconv.Atoi(v); err != nil || db < 0 {
			return nil, fmt.Errorf("%s: service \"redis\": setting db=%q is not a database number", fn, v)
		}
	}
	timeout, err := settingDuration(fn, "redis", s, "dial_timeout", defaultDialTimeout)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, connectError(ctx, fn, "redis", addr, err)
	}
	c := &redisConn{conn: conn, r: bufio.NewReader(conn)}
	// The server must answer the handshake within the dial timeout too.
	handshakeCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if pw := s["password"]; pw != "" {
		cmd := []string{"AUTH", pw}
		if user := s["username"]; user != "" {
			cmd = []string{"AUTH", user, pw}
		}
		if _, err := c.do(handshakeCtx, cmd...); err != nil {
			c.close()
			return nil, handshakeError(ctx, handshakeCtx, fn, addr, "AUTH", timeout, err)
		}
	}
	if db != 0 {
		if _, err := c.do(handshakeCtx, "SELECT", strconv.Itoa(db)); err != nil {
			c.close()
			return nil, handshakeError(ctx, handshakeCtx, fn, addr, "SELECT "+strconv.Itoa(db), timeout, err)
		}
	}
	return c, nil
}

// handshakeError classifies a failed AUTH or SELECT: no answer within the
// dial timeout makes the server unreachable; a refusal is the server's word.
func handshakeError(ctx, handshakeCtx context.Context, fn, addr, op string, timeout time.Duration, err error) error {
	if jobErr(ctx) == nil && jobErr(handshakeCtx) != nil {
		return &UnreachableError{Func: fn, Service: "redis", Addr: addr,
			Err: fmt.Errorf("no reply to %s within %s (dial_timeout): %v", op, timeout, err)}
	}
	return opError(ctx, fn, "redis", op+" at "+addr, err)
}

func (c *redisConn) close() {
	c.conn.Close()
}

// redisError is an error reply from the server ("-ERR ...").
type redisError string

func (e redisError) Error() string { return "server replied: " + string(e) }

// redisReply is one decoded reply: a status or bulk string, an integer,
// or nil (a null bulk string).
type redisReply struct {
	str   string
	num   int64
	isNum bool
	isNil bool
}

// do sends one command and reads its reply. The exchange ends at ctx's
// deadline, or as soon as ctx is cancelled.
func (c *redisConn) do(ctx context.Context, cmd ...string) (redisReply, error) {
	dl, _ := ctx.Deadline() // zero (no deadline) if ctx has none
	c.conn.SetDeadline(dl)
	// Registered after SetDeadline, so a cancellation at any moment wins;
	// if ctx is already done, the function runs at once.
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(cmd))
	for _, arg := range cmd {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(arg), arg)
	}
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		return redisReply{}, fmt.Errorf("sending %s: %w", cmd[0], err)
	}
	rep, err := c.readReply()
	if err != nil {
		var re redisError
		if errors.As(err, &re) {
			return redisReply{}, err
		}
		return redisReply{}, fmt.Errorf("reading reply to %s: %w", cmd[0], err)
	}
	return rep, nil
}

func (c *redisConn) readLine() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return "", fmt.Errorf("malformed reply line %q", truncate(line, 40))
	}
	return line[:len(line)-2], nil
}

func (c *redisConn) readReply() (redisReply, error) {
	line, err := c.readLine()
	if err != nil {
		return redisReply{}, err
	}
	kind, rest := line[0], line[1:]
	switch kind {
	case '+':
		return redisReply{str: rest}, nil
	case '-':
		return redisReply{}, redisError(rest)
	case ':':
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return redisReply{}, fmt.Errorf("malformed integer reply %q", truncate(rest, 40))
		}
		return redisReply{num: n, isNum: true}, nil
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 {
			return redisReply{}, fmt.Errorf("malformed bulk length %q", truncate(rest, 40))
		}
		if n == -1 {
			return redisReply{isNil: true}, nil
		}
		if n > maxRedisReplyBytes {
			return redisReply{}, fmt.Errorf("bulk reply of %d bytes exceeds the %d-byte limit", n, maxRedisReplyBytes)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return redisReply{}, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return redisReply{}, errors.New("malformed bulk reply terminator")
		}
		return redisReply{str: string(buf[:n])}, nil
	default:
		return redisReply{}, fmt.Errorf("unexpected reply type %q", kind)
	}
}

// getInt reads key and parses it as an integer.
func (c *redisConn) getInt(ctx context.Context, key string) (int64, error) {
	rep, err := c.do(ctx, "GET", key)
	if err != nil {
		return 0, err
	}
	if rep.isNil {
		return 0, fmt.Errorf("key %q does not exist (deleted by another client?)", key)
	}
	n, err := strconv.ParseInt(rep.str, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("value of %q is %q, not an integer", key, truncate(rep.str, 40))
	}
	return n, nil
}
