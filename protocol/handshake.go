package protocol

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
)

// Version 2: every worker has its own key, derived from the cluster secret
// and its id, so a worker (or a function that got hold of its key) can act
// only as itself; and the orchestrator opens each session with a fresh
// challenge nonce, so no frame of an earlier session, the hello included,
// can be replayed.
//
//	worker                                  orchestrator
//	  | <------------------- challenge --- |  {"proto":2,"nonce":N_o}, not authenticated
//	  | --- hello ------------------------> |  {"worker_id":ID,"nonce":N_w,...}, MAC with key(ID)
//	  | <----------------------- job ----- |  every frame: MAC with key(ID) over N_o, N_w,
//	  | --- result -----------------------> |  its direction and its sequence number

// KeySize is the length of a worker key.
const KeySize = 32

// MaxHelloFrame bounds the frames read before the peer is authenticated
// (challenge, hello): a stranger cannot make us buffer more.
const MaxHelloFrame = 64 << 10

// KeyPath is where a worker finds its key at boot (QEMU workers: a per-boot
// initramfs archive the orchestrator appends). The runtime reads it and
// deletes it before it runs anything.
const KeyPath = "/run/mf/key"

// Directions a frame may travel; part of every version-2 MAC, so a frame
// cannot be reflected back to its sender.
const (
	dirToOrch   = "w2o"
	dirToWorker = "o2w"
)

// Errors of the handshake (the orchestrator logs them when it refuses a
// connection).
var (
	ErrUnknownWorker = errors.New("no such worker in the cluster")
	ErrWrongAddress  = errors.New("the worker connected from an address that is not its own")
	ErrBadHandshake  = errors.New("bad handshake")
	// ErrOtherWorker: a hello on a channel that belongs to one worker (a
	// QEMU worker's virtio-serial port: Acceptor.ServeConn) named another.
	ErrOtherWorker = errors.New("the hello names a worker other than the one this channel belongs to")
)

// keySalt fixes HKDF's extract step for MicroFaaS worker keys.
var keySalt = []byte("microfaas worker key v2")

// WorkerKey derives worker id's key from the cluster secret:
// HKDF-SHA256(secret, salt "microfaas worker key v2", info "worker:"+id),
// 32 bytes (RFC 5869). Both mfbuild/mforch (to deliver and check it) and
// nobody else compute it: a worker only ever holds its own.
func WorkerKey(clusterSecret []byte, id string) ([]byte, error) {
	if len(clusterSecret) < 16 {
		return nil, fmt.Errorf("cluster secret of %d bytes: want at least 16 (set secret: in the cluster file)", len(clusterSecret))
	}
	if id == "" {
		return nil, errors.New("worker key: empty worker id")
	}
	return hkdf.Key(sha256.New, clusterSecret, keySalt, "worker:"+id, KeySize)
}

// EncodeKey is a key as its key file holds it: hex and a newline.
func EncodeKey(key []byte) []byte { return []byte(hex.EncodeToString(key) + "\n") }

// DecodeKey reads a key file's contents.
func DecodeKey(b []byte) ([]byte, error) {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	key, err := hex.DecodeString(string(b))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("worker key: want %d bytes of hex", KeySize)
	}
	return key, nil
}

// macV2 authenticates one version-2 frame:
// HMAC-SHA256(key, "mfp2" 0 dir 0 N_o N_w 0 seq(8, big-endian) type 0 body).
func macV2(key []byte, dir, session string, seq uint64, typ string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mfp2\x00" + dir + "\x00" + session + "\x00"))
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	m.Write(s[:])
	m.Write([]byte(typ))
	m.Write([]byte{0})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Challenge is the orchestrator's first frame.
type Challenge struct {
	Proto int    `json:"proto"`
	Nonce string `json:"nonce"` // 16 random bytes, hex
	// Accepts lists the optional frames the orchestrator takes
	// (FeatureLog); absent from an orchestrator built before them. Not
	// authenticated: whoever can rewrite it can cut the connection too.
	Accepts []string `json:"accepts,omitempty"`
}

func validNonce(n string) bool {
	b, err := hex.DecodeString(n)
	return err == nil && len(b) == 16
}

// ClientHandshake is the worker's side: it reads the orchestrator's
// challenge and sends hello, authenticated with the worker's key. It fills
// hello's Proto and Nonce. The returned Conn carries the session.
func ClientHandshake(rw io.ReadWriter, key []byte, hello Hello) (*Conn, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("worker key of %d bytes, want %d", len(key), KeySize)
	}
	c := &Conn{rw: rw, r: bufio.NewReaderSize(rw, 64<<10), secret: key, v2: true,
		sendDir: dirToOrch, recvDir: dirToWorker}
	line, err := readLine(c.r, MaxHelloFrame)
	if err != nil {
		return nil, fmt.Errorf("waiting for the orchestrator's challenge: %w", err)
	}
	var env envelope
	var ch Challenge
	if err := json.Unmarshal(line, &env); err != nil || env.Type != TypeChallenge || json.Unmarshal(env.Body, &ch) != nil {
		return nil, fmt.Errorf("%w: expected a challenge frame", ErrBadHandshake)
	}
	if ch.Proto != Version || !validNonce(ch.Nonce) {
		return nil, fmt.Errorf("%w: challenge for protocol %d with nonce %q (this worker speaks %d)", ErrBadHandshake, ch.Proto, ch.Nonce, Version)
	}
	nonce, err := NewNonce()
	if err != nil {
		return nil, err
	}
	hello.Proto, hello.Nonce = Version, nonce
	c.session, c.accepts = ch.Nonce+nonce, ch.Accepts
	if err := c.Send(TypeHello, hello); err != nil {
		return nil, err
	}
	return c, nil
}

// KeyFunc returns worker id's key, or an error when id may not connect
// from remote (ErrUnknownWorker, ErrWrongAddress).
type KeyFunc func(id string, remote net.Addr) ([]byte, error)

// ClusterKeys is the orchestrator's KeyFunc: keys derived from the cluster
// secret for the ids in addrs, each allowed only from its address (an empty
// address: from anywhere, e.g. a QEMU worker behind user-mode NAT).
func ClusterKeys(clusterSecret []byte, addrs map[string]string) KeyFunc {
	return func(id string, remote net.Addr) ([]byte, error) {
		want, ok := addrs[id]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownWorker, id)
		}
		if err := CheckAddr(remote, want); err != nil {
			return nil, fmt.Errorf("worker %s: %w", id, err)
		}
		return WorkerKey(clusterSecret, id)
	}
}

// CheckAddr checks that remote is from IP want ("" allows any).
func CheckAddr(remote net.Addr, want string) error {
	if want == "" {
		return nil
	}
	w, err := netip.ParseAddr(want)
	if err != nil {
		return fmt.Errorf("worker address %q: %w", want, err)
	}
	var got netip.Addr
	if ta, ok := remote.(*net.TCPAddr); ok {
		got, _ = netip.AddrFromSlice(ta.IP)
	} else if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
		got = ap.Addr()
	}
	if got.Unmap() != w.Unmap() {
		return fmt.Errorf("%w: %s, expected %s", ErrWrongAddress, remote, want)
	}
	return nil
}

// ServerHandshake is the orchestrator's side: it sends a fresh challenge,
// reads the hello (at most MaxHelloFrame), looks up the key of the worker
// it names (keys checks the id and the address), and verifies the hello's
// MAC. Only then does the Conn accept frames up to MaxFrame. Its
// challenge offers no optional frame: the worker sends only what every
// version takes (ServerHandshakeAccepts offers more).
func ServerHandshake(rw io.ReadWriter, remote net.Addr, keys KeyFunc) (*Conn, Hello, error) {
	return ServerHandshakeAccepts(rw, remote, keys, nil)
}

// ServerHandshakeAccepts is ServerHandshake whose challenge says the
// caller takes the optional frames accepts (FeatureLog): it must then read
// them wherever it reads the worker's frames.
func ServerHandshakeAccepts(rw io.ReadWriter, remote net.Addr, keys KeyFunc, accepts []string) (*Conn, Hello, error) {
	var h Hello
	nonce, err := NewNonce()
	if err != nil {
		return nil, h, err
	}
	body, _ := json.Marshal(Challenge{Proto: Version, Nonce: nonce, Accepts: accepts})
	if err := writeFrame(rw, envelope{Type: TypeChallenge, Body: body}, nil); err != nil {
		return nil, h, err
	}
	r := bufio.NewReaderSize(rw, 64<<10)
	line, err := readLine(r, MaxHelloFrame)
	if err != nil {
		return nil, h, fmt.Errorf("hello: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil || env.Type != TypeHello {
		return nil, h, fmt.Errorf("%w: the first frame must be a hello", ErrBadHandshake)
	}
	if err := json.Unmarshal(env.Body, &h); err != nil {
		return nil, h, fmt.Errorf("%w: malformed hello: %v", ErrBadHandshake, err)
	}
	if h.Proto != Version {
		return nil, h, fmt.Errorf("%w: worker %q speaks protocol %d, this orchestrator %d: rebuild the worker image", ErrBadHandshake, h.WorkerID, h.Proto, Version)
	}
	if !validNonce(h.Nonce) {
		return nil, h, fmt.Errorf("%w: hello nonce must be 16 bytes of hex", ErrBadHandshake)
	}
	key, err := keys(h.WorkerID, remote)
	if err != nil {
		return nil, h, err
	}
	c := &Conn{rw: rw, r: r, secret: key, v2: true, session: nonce + h.Nonce,
		sendDir: dirToWorker, recvDir: dirToOrch}
	want := c.frameMAC(dirToOrch, 0, TypeHello, env.Body)
	if !hmac.Equal([]byte(want), []byte(env.MAC)) {
		return nil, h, fmt.Errorf("hello from %q: %w", h.WorkerID, ErrBadMAC)
	}
	if env.Seq != 0 {
		return nil, h, fmt.Errorf("hello sequence %d: %w", env.Seq, ErrReplay)
	}
	c.recvSeq = 1
	return c, h, nil
}

// Boards (BeagleBone Black) have no per-boot initramfs: their key is on the
// card, in a raw area no filesystem or bootloader uses (the 4 KiB before
// the FAT partition, builder/image), which only root can read through the
// block device and functions never see. Format: CardKeyMagic, the key as
// EncodeKey writes it, then zeros.
const (
	CardKeyOffset = 16<<20 - CardKeySize
	CardKeySize   = 4096
	CardKeyMagic  = "MFKEY2\n"
)

// EncodeCardKey is the card key area's contents for key.
func EncodeCardKey(key []byte) []byte {
	b := make([]byte, CardKeySize)
	copy(b, append([]byte(CardKeyMagic), EncodeKey(key)...))
	return b
}

// DecodeCardKey reads a card key area; ok is false when it holds no key.
func DecodeCardKey(b []byte) (key []byte, ok bool, err error) {
	rest, found := bytes.CutPrefix(b, []byte(CardKeyMagic))
	if !found {
		return nil, false, nil
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	key, err = DecodeKey(line)
	return key, err == nil, err
}
