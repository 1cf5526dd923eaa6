package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/microfaas/microfaas/protocol"
)

// CardDevices are where a board's key may be: the card it booted from
// (SD or eMMC, whichever the kernel named first).
var CardDevices = []string{"/dev/mmcblk0", "/dev/mmcblk1"}

// CardKey reads a board's key from the key area of the first of devs that
// holds one (protocol.CardKeyOffset). None holding a key is (nil, nil).
// Only root can open the devices; functions have none in their sandbox.
func CardKey(devs []string) ([]byte, error) {
	for _, d := range devs {
		f, err := os.Open(d)
		if err != nil {
			continue
		}
		b := make([]byte, protocol.CardKeySize)
		_, err = f.ReadAt(b, protocol.CardKeyOffset)
		f.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			continue
		}
		key, ok, err := protocol.DecodeCardKey(b)
		if err != nil {
			return nil, fmt.Errorf("worker key on %s: %w", d, err)
		}
		if ok {
			return key, nil
		}
	}
	return nil, nil
}
