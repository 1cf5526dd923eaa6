package initramfs

import (
	"bytes"
	"io"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestSecretArchive(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSecretArchive(&buf, "/run/mf/key", []byte("k3y\n")); err != nil {
		t.Fatal(err)
	}
	rr := cpio.Newc.Reader(bytes.NewReader(buf.Bytes()))
	recs, err := cpio.ReadAllRecords(rr)
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
			if string(b) != "k3y\n" {
				t.Errorf("content %q", b)
			}
		}
	}
	if err := WriteSecretArchive(&buf, "/", nil); err == nil {
		t.Error("an empty path was accepted")
	}
}
