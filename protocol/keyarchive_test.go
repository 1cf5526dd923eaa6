package protocol

import (
	"bytes"
	"io"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// TestKeyArchive reads the archive back with u-root's cpio reader (the
// format the kernel unpacks): the key file is root's, 0400, in 0700.
func TestKeyArchive(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, KeySize)
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(KeyArchive(key))))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"run": cpio.S_IFDIR | 0o755, "run/mf": cpio.S_IFDIR | 0o700, "run/mf/key": cpio.S_IFREG | 0o400}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		if m, ok := want[r.Name]; !ok || r.Mode != m || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: mode %o uid %d gid %d", r.Name, r.Mode, r.UID, r.GID)
		}
		if r.Name == "run/mf/key" {
			b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if got, err := DecodeKey(b); err != nil || !bytes.Equal(got, key) {
				t.Errorf("key file %q: %v", b, err)
			}
		}
	}
}
