package protocol

// Bundle chunks are the one binary frame of the protocol: a bundle is
// megabytes, and as JSON (base64, scanned and copied on each side) its
// fetch cost a QEMU worker under TCG most of its time. docs/protocol.md,
// Bundles, says what is authenticated and why that is enough.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrBinaryFrame means a bundle chunk came to Receive: its raw bytes need
// ReceiveBundleChunk.
var ErrBinaryFrame = errors.New("a bundle chunk carries raw bytes: read it with ReceiveBundleChunk")

// SendBundleChunk writes one bundle chunk: its header as an authenticated
// frame (Length set to len(ch.Data)), then ch.Data raw. A chunk that
// carries an Error carries no data.
func (c *Conn) SendBundleChunk(ch BundleChunk) error {
	if len(ch.Data) > BundleChunkSize {
		return fmt.Errorf("send %s: %d bytes, at most %d: %w", TypeBundleChunk, len(ch.Data), BundleChunkSize, ErrFrameTooLarge)
	}
	if ch.Error != "" && len(ch.Data) > 0 {
		return fmt.Errorf("send %s: a chunk with an error carries no data", TypeBundleChunk)
	}
	ch.Length = len(ch.Data)
	return c.send(TypeBundleChunk, ch, ch.Data)
}

// ReceiveBundleChunk reads one frame that must be a bundle chunk, and its
// raw bytes into buf, which must hold BundleChunkSize bytes: the chunk's
// Data is buf[:Length]. A Length over BundleChunkSize is refused before
// anything more is read (ErrFrameTooLarge), so a peer cannot make us
// buffer more. The caller checks Digest and Offset against what it asked
// for, and the whole bundle against its digest.
func (c *Conn) ReceiveBundleChunk(buf []byte) (BundleChunk, error) {
	if len(buf) < BundleChunkSize {
		return BundleChunk{}, fmt.Errorf("bundle chunk buffer of %d bytes, want %d", len(buf), BundleChunkSize)
	}
	typ, body, err := c.receive()
	if err != nil {
		return BundleChunk{}, err
	}
	if typ != TypeBundleChunk {
		return BundleChunk{}, fmt.Errorf("expected a %s message, got %q", TypeBundleChunk, typ)
	}
	var ch BundleChunk
	if err := json.Unmarshal(body, &ch); err != nil {
		return BundleChunk{}, fmt.Errorf("malformed %s: %w", typ, err)
	}
	switch {
	case ch.Length < 0:
		return BundleChunk{}, fmt.Errorf("%s of length %d", typ, ch.Length)
	case ch.Length > BundleChunkSize:
		return BundleChunk{}, fmt.Errorf("%s of %d bytes, at most %d: %w", typ, ch.Length, BundleChunkSize, ErrFrameTooLarge)
	case ch.Error != "" && ch.Length > 0:
		return BundleChunk{}, fmt.Errorf("%s with an error and %d bytes of data", typ, ch.Length)
	}
	if _, err := io.ReadFull(c.r, buf[:ch.Length]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return BundleChunk{}, fmt.Errorf("%s data: %w", typ, err)
	}
	ch.Data = buf[:ch.Length]
	return ch, nil
}
