package orchestrator

import (
	"errors"
	"fmt"
	"os"

	"github.com/microfaas/microfaas/protocol"
)

// ErrBundleRequests means a worker asked for its job's bundle more often
// than fetching it once (twice over) takes: it is cut off.
var ErrBundleRequests = errors.New("too many bundle requests for one job")

// bundleFetch serves one session's bundle requests (protocol.TypeBundleRequest)
// in the connection's reader goroutine: one chunk per request, read from
// the bundle file here so a slow disk never holds up the loop. A worker
// gets only the bundle of the job it was sent; anything else is answered
// with an Error chunk.
type bundleFetch struct {
	o      *Orchestrator
	wc     *workerConn
	worker string
	// Since the last result: the file open for the job's bundle, and the
	// requests the worker made.
	f        *os.File
	digest   string
	requests int
}

// maxBundleRequests bounds the requests of one job: each chunk twice,
// plus a few for resumed fetches and the final empty read.
func maxBundleRequests(size int64) int {
	return int(size/protocol.BundleChunkSize)*2 + 4
}

// serve answers one request. An error means the worker is cut off.
func (b *bundleFetch) serve(req protocol.BundleRequest) error {
	ref := b.wc.jobBundle()
	b.requests++
	var size int64
	if ref != nil {
		size = ref.Size
	}
	if b.requests > maxBundleRequests(size) {
		b.refuse(req, "%v (%d): the worker is cut off", ErrBundleRequests, b.requests)
		return fmt.Errorf("worker %s: %w (%d for a bundle of %d bytes)", b.worker, ErrBundleRequests, b.requests, size)
	}
	switch {
	case ref == nil || b.o.cfg.Bundles == nil:
		b.refuse(req, "no job with a bundle is running on this worker")
		return nil
	case req.Digest != ref.Digest:
		b.refuse(req, "bundle %q is not the bundle of this worker's job", req.Digest)
		return nil
	case req.Offset < 0 || req.Offset > ref.Size:
		b.refuse(req, "offset %d is outside the bundle (%d bytes)", req.Offset, ref.Size)
		return nil
	}
	if b.f == nil || b.digest != ref.Digest {
		b.closeFile()
		f, err := b.o.cfg.Bundles.Open(ref.Digest)
		if err != nil {
			b.o.log.Error("cannot open a deployed function's bundle for a worker", "worker", b.worker, "digest", ref.Digest, "err", err)
			b.refuse(req, "the orchestrator cannot open the bundle: %v", err)
			return nil
		}
		b.f, b.digest = f, ref.Digest
	}
	data := make([]byte, min(protocol.BundleChunkSize, ref.Size-req.Offset))
	if _, err := b.f.ReadAt(data, req.Offset); err != nil {
		b.o.log.Error("cannot read a deployed function's bundle for a worker", "worker", b.worker, "digest", ref.Digest, "err", err)
		b.refuse(req, "the orchestrator cannot read the bundle: %v", err)
		return nil
	}
	// The writer sends it binary: a header frame, then the raw bytes.
	b.wc.send(protocol.TypeBundleChunk, protocol.BundleChunk{Digest: req.Digest, Offset: req.Offset, Data: data})
	return nil
}

// refuse answers req with an Error chunk, and logs why.
func (b *bundleFetch) refuse(req protocol.BundleRequest, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.o.log.Warn("bundle request refused", "worker", b.worker, "digest", req.Digest, "offset", req.Offset, "why", msg)
	b.wc.send(protocol.TypeBundleChunk, protocol.BundleChunk{Digest: req.Digest, Offset: req.Offset, Error: msg})
}

// endJob ends the job's fetch: its result arrived (or the session ended).
func (b *bundleFetch) endJob() {
	b.closeFile()
	b.requests = 0
}

func (b *bundleFetch) closeFile() {
	if b.f != nil {
		b.f.Close()
		b.f, b.digest = nil, ""
	}
}
