package power

// User networking without the host's loopback. A QEMU worker on user
// networking (slirp) used to reach everything the host can: 10.0.2.2 is
// the host's loopback, so a function could call mforch's HTTP API or any
// other local service (issue 18, attack 4). Now the netdev is
// restrict=on: the guest reaches nothing outside, except the guestfwd
// rules set here, one per TCP endpoint it needs: the orchestrator's
// worker port and the services the cluster file names at the host's
// address as guests see it (10.0.2.2:PORT). Each rule runs, per
// connection, this very binary as a relay (relayArg) to 127.0.0.1:PORT;
// the worker port's relay connects from a loopback address of the
// worker's own (RelaySource), so the worker port counts each VM's
// pending handshakes apart (protocol.Acceptor). slirp refuses guestfwd
// on its own host address, so that moves to slirpHost: 10.0.2.2 stays
// what the worker dials and needs no change in any cluster file.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microfaas/microfaas/cluster"
)

// slirpHost is slirp's own address (host=): out of the way of 10.0.2.2,
// which guestfwd rules now serve.
const slirpHost = "10.0.2.254"

// relayArg, as a binary's first argument, makes it a relay (init below).
const relayArg = "__mf-qemu-relay"

// relayDialTimeout bounds the relay's connection to the host side.
const relayDialTimeout = 5 * time.Second

// maxRelays bounds the relays (host processes) one worker's connections
// may hold at once: slirp starts one per connection, so without a bound a
// function opening connections to a service would fill the host with
// processes. Past it a connection is closed at once.
const maxRelays = 32

func init() {
	// slirp runs the relay with the guest's connection on stdin/stdout.
	// Every binary that links this package (mforch, the test binaries
	// that boot QEMU workers) serves as one.
	if len(os.Args) == 5 && os.Args[1] == relayArg {
		if err := relay(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, "mforch relay:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// relay copies between the guest's connection (stdin) and target, dialled
// from the loopback address source ("-": any), once it holds one of the
// worker's maxRelays slots (lock files in slots).
func relay(source, target, slots string) error {
	guest, err := net.FileConn(os.Stdin)
	if err != nil {
		return fmt.Errorf("stdin is not the guest's connection: %w", err)
	}
	defer guest.Close()
	slot, err := takeSlot(slots)
	if err != nil {
		return err
	}
	defer slot.Close() // the lock goes with it
	d := net.Dialer{Timeout: relayDialTimeout}
	if source != "-" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	host, err := d.Dial("tcp", target)
	if err != nil && d.LocalAddr != nil {
		d.LocalAddr = nil // no such loopback address here: any will do
		host, err = d.Dial("tcp", target)
	}
	if err != nil {
		return err
	}
	defer host.Close()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go pipe(host, guest)
	go pipe(guest, host)
	wg.Wait()
	return nil
}

// ErrTooManyRelays means a worker holds maxRelays connections already.
var ErrTooManyRelays = errors.New("too many connections from this worker at once")

// takeSlot locks one of the lock files 0..maxRelays-1 in dir (made as
// needed, owner-only); the lock lasts as long as the returned file (the
// process) does.
func takeSlot(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for i := range maxRelays {
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(i)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("%w (%d)", ErrTooManyRelays, maxRelays)
}

// RelaySource is the loopback address worker index i (0-based, in the
// cluster file's order) connects to the worker port from: 127.77.x.y.
func RelaySource(i int) string {
	n := i + 1
	return fmt.Sprintf("127.77.%d.%d", (n>>8)&255, n&255)
}

// guestFwd is one guestfwd rule: the guest's address:port, the host's
// target and the relay's source address ("-": any).
type guestFwd struct {
	guest, target, source string
}

// ErrServiceUnreachable means a service a user-networking VM worker
// would need is not on this host, where the guest can reach it.
var ErrServiceUnreachable = errors.New("service unreachable from QEMU workers on user networking")

// serviceEndpoints lists the TCP endpoints (host:port) named in the
// services' settings: addr, brokers (a list), endpoint and URL-valued
// settings, a DSN (URL or key=value), or host with port.
func serviceEndpoints(services map[string]map[string]string) []string {
	var out []string
	add := func(host, port, fallback string) {
		if host == "" {
			return
		}
		if port == "" {
			port = fallback
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" {
			return
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	defaults := map[string]string{"http": "80", "https": "443", "postgres": "5432", "postgresql": "5432", "redis": "6379"}
	for _, name := range sortedKeys(services) {
		s := services[name]
		for _, k := range sortedKeys(s) {
			v := s[k]
			if u, err := url.Parse(v); err == nil && u.Host != "" {
				add(u.Hostname(), u.Port(), defaults[u.Scheme])
				continue
			}
			if k == "dsn" { // libpq key=value
				kv := map[string]string{}
				for _, f := range strings.Fields(v) {
					if a, b, ok := strings.Cut(f, "="); ok {
						kv[a] = strings.Trim(b, "'")
					}
				}
				add(kv["host"], kv["port"], "5432")
				continue
			}
			for _, item := range strings.Split(v, ",") {
				if h, p, err := net.SplitHostPort(strings.TrimSpace(item)); err == nil {
					add(h, p, "")
				}
			}
		}
		if h := s["host"]; h != "" && s["dsn"] == "" {
			fallback := ""
			if name == "postgres" {
				fallback = "5432"
			}
			add(h, s["port"], fallback)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// forwards are the guestfwd rules of a user-networking worker: the worker
// port, from the worker's own loopback address, and every service
// endpoint at the orchestrator's address (the host as guests see it).
// Endpoints elsewhere cannot be reached through restrict=on: they are
// returned as unreachable, for the caller to report.
func forwards(c *cluster.Cluster, w cluster.Worker) (fwds []guestFwd, unreachable []string) {
	orch := c.Network.Orchestrator
	source := "-"
	if i := slices.IndexFunc(c.Workers, func(x cluster.Worker) bool { return x.ID == w.ID }); i >= 0 {
		source = RelaySource(i)
	}
	fwds = append(fwds, guestFwd{guest: net.JoinHostPort(orch, strconv.Itoa(c.Network.Port)),
		target: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Network.Port)), source: source})
	seen := map[string]bool{fwds[0].guest: true}
	for _, ep := range serviceEndpoints(c.Services) {
		h, p, _ := net.SplitHostPort(ep)
		if a, err := netip.ParseAddr(h); err != nil || a.String() != orch {
			unreachable = append(unreachable, ep)
			continue
		}
		if !seen[ep] {
			seen[ep] = true
			fwds = append(fwds, guestFwd{guest: ep, target: net.JoinHostPort("127.0.0.1", p), source: "-"})
		}
	}
	return fwds, unreachable
}

// userNetdev is the -netdev value of a user-networking worker with the
// relay binary exe, its slot folder slots (takeSlot) and the rules fwds.
func userNetdev(exe, slots string, fwds []guestFwd) string {
	var b strings.Builder
	b.WriteString("user,id=n0,restrict=on,ipv6=off,host=" + slirpHost)
	for _, f := range fwds {
		cmd := shellQuote(exe) + " " + relayArg + " " + f.source + " " + f.target + " " + shellQuote(slots)
		// QEMU's option syntax: a comma inside a value is doubled.
		b.WriteString(",guestfwd=tcp:" + f.guest + "-cmd:" + strings.ReplaceAll(cmd, ",", ",,"))
	}
	return b.String()
}

// shellQuote quotes s for g_shell_parse_argv, which slirp splits a
// guestfwd command with.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
