package runtime

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/microfaas/microfaas/protocol"
)

// fetcher fetches a bundle over the session, between a Job and its
// Result: a bundle_request for the next part at the offset it has, one
// bundle_chunk in answer (at most protocol.BundleChunkSize bytes), until
// the bundle's size. A chunk carrying an error fails the job; a broken or
// out-of-step session is errSession.
func (w *Worker) fetcher(conn net.Conn, pc *protocol.Conn) Fetch {
	return func(ref protocol.BundleRef, out io.Writer) error {
		for off := int64(0); off < ref.Size; {
			conn.SetWriteDeadline(time.Now().Add(w.Config.Failsafe))
			if err := pc.Send(protocol.TypeBundleRequest, protocol.BundleRequest{Digest: ref.Digest, Offset: off}); err != nil {
				return fmt.Errorf("%w: asking for bundle %s: %v", errSession, ref.Digest, err)
			}
			conn.SetReadDeadline(time.Now().Add(w.Config.Failsafe))
			typ, body, err := pc.Receive()
			if err != nil {
				return fmt.Errorf("%w: fetching bundle %s: %v", errSession, ref.Digest, err)
			}
			if typ != protocol.TypeBundleChunk {
				return fmt.Errorf("%w: a %q message while fetching bundle %s", errSession, typ, ref.Digest)
			}
			var c protocol.BundleChunk
			if err := json.Unmarshal(body, &c); err != nil {
				return fmt.Errorf("%w: malformed bundle chunk: %v", errSession, err)
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
