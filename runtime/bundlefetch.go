package runtime

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// fetcher fetches a bundle over the session, between a Job and its
// Result: a bundle_request for the next part at the offset it has, one
// bundle_chunk in answer (an authenticated header, then at most
// protocol.BundleChunkSize raw bytes), until the bundle's size. The raw
// bytes are not authenticated one by one: Bundles.fetch checks the whole
// file against the Job's digest before anything of it is used. A chunk
// carrying an error fails the job; a broken or out-of-step session is
// errSession.
func (w *Worker) fetcher(conn net.Conn, pc *protocol.Conn) Fetch {
	return func(ref protocol.BundleRef, out io.Writer) error {
		// One chunk's buffer for the whole fetch: the chunk's raw bytes
		// land here, at most protocol.BundleChunkSize of them.
		buf := make([]byte, protocol.BundleChunkSize)
		for off := int64(0); off < ref.Size; {
			conn.SetWriteDeadline(time.Now().Add(w.Config.Failsafe))
			if err := pc.Send(protocol.TypeBundleRequest, protocol.BundleRequest{Digest: ref.Digest, Offset: off}); err != nil {
				return fmt.Errorf("%w: asking for bundle %s: %v", errSession, ref.Digest, err)
			}
			conn.SetReadDeadline(time.Now().Add(w.Config.Failsafe))
			c, err := pc.ReceiveBundleChunk(buf)
			if err != nil {
				return fmt.Errorf("%w: fetching bundle %s: %v", errSession, ref.Digest, err)
			}
			if c.Error != "" {
				return fmt.Errorf("the orchestrator could not send bundle %s: %s", ref.Digest, c.Error)
			}
			if c.Digest != ref.Digest || c.Offset != off || len(c.Data) == 0 || len(c.Data) > protocol.BundleChunkSize ||
				int64(len(c.Data)) > ref.Size-off {
				return fmt.Errorf("%w: bundle chunk out of step (digest %s, offset %d, %d bytes; asked for %s at %d of %d)",
					errSession, c.Digest, c.Offset, len(c.Data), ref.Digest, off, ref.Size)
			}
			if _, err := out.Write(c.Data); err != nil {
				return fmt.Errorf("storing bundle %s: %w", ref.Digest, err)
			}
			off += int64(len(c.Data))
		}
		return nil
	}
}
