package power

// User networking without the host's loopback. A QEMU worker on user
// networking (slirp) used to reach everything the host can: 10.0.2.2 is
// the host's loopback, so a function could call mforch's HTTP API or any
// other local service (issue 18, attack 4). Now the netdev is
// restrict=on: the guest reaches nothing outside, except the guestfwd
// rules set here, one per TCP endpoint it needs: the services the
// cluster file names at the host's address as guests see it
// (10.0.2.2:PORT) and, for a worker whose session does not run over its
// virtio-serial port (sessionport.go: ARM virt workers), the
// orchestrator's worker port. Each rule runs, per
// connection, a relay (internal/qemurelay: the small mfrelay program beside
// this one, else this very binary; at most qemurelay.MaxRelays at once per
// worker) to 127.0.0.1:PORT;
// the worker port's relay connects from a loopback address of the
// worker's own (RelaySource), so the worker port counts each VM's
// pending handshakes apart (protocol.Acceptor). slirp refuses guestfwd
// on its own host address, so that moves to slirpHost: 10.0.2.2 stays
// what the worker dials and needs no change in any cluster file.

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/microfaas/microfaas/cluster"
	"github.com/microfaas/microfaas/internal/qemurelay"
)

// slirpHost is slirp's own address (host=): out of the way of 10.0.2.2,
// which guestfwd rules now serve.
const slirpHost = "10.0.2.254"

// slirpNet is QEMU user networking's default network, where guestfwd
// addresses must lie.
var slirpNet = netip.MustParsePrefix("10.0.2.0/24")

// RelayBinary is the relay QEMU runs per connection: mfrelay in the folder
// of the running executable (make build puts it beside mforch), else the
// running executable itself, which links internal/qemurelay too but, being
// far larger, starts slower on every cold start's path.
func RelayBinary() string {
	exe, err := os.Executable()
	if err != nil {
		return "/proc/self/exe" // not reached on Linux
	}
	small := filepath.Join(filepath.Dir(exe), "mfrelay")
	if fi, err := os.Stat(small); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return small
	}
	return exe
}

// relayArg, as a binary's first argument, makes it a relay (qemurelay).
const relayArg = qemurelay.Arg

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
// port, from the worker's own loopback address (unless viaPort: the
// session runs over the worker's virtio-serial port, sessionport.go), and
// every service endpoint at the orchestrator's address (the host as
// guests see it). Endpoints elsewhere cannot be reached through
// restrict=on: they are returned as unreachable, for the caller to report.
func forwards(c *cluster.Cluster, w cluster.Worker, viaPort bool) (fwds []guestFwd, unreachable []string) {
	orch := c.Network.Orchestrator
	source := "-"
	if i := slices.IndexFunc(c.Workers, func(x cluster.Worker) bool { return x.ID == w.ID }); i >= 0 {
		source = RelaySource(i)
	}
	worker := net.JoinHostPort(orch, strconv.Itoa(c.Network.Port))
	// slirp serves guestfwd rules only inside its own network: an
	// orchestrator address elsewhere (a BeagleBone LAN's, as in a flasher
	// test) is out of a user-networked guest's reach, and QEMU would refuse
	// the whole command line.
	if a, err := netip.ParseAddr(orch); err != nil || !slirpNet.Contains(a) {
		if viaPort {
			return nil, serviceEndpoints(c.Services)
		}
		return nil, []string{worker}
	}
	// The worker port's address is never a service's: with the port, no
	// rule serves it, and a guest's connection to it is refused.
	seen := map[string]bool{worker: true}
	if !viaPort {
		fwds = append(fwds, guestFwd{guest: worker,
			target: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Network.Port)), source: source})
	}
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
