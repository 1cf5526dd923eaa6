package image

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/u-root/u-root/pkg/dt"
)

// MaxBootargs is the ARM kernel's COMMAND_LINE_SIZE (including the NUL):
// longer bootargs would be cut by the kernel.
const MaxBootargs = 1024

// dtbSlack is room left free at the end of the blob, as dtc -p does, for
// U-Boot SPL's in-place fixups (spl_fixup_fdt).
const dtbSlack = 4096

// PersonaliseDTB returns the device tree with /chosen/bootargs set (the
// /chosen node is created if missing). The result is padded to a size that
// does not depend on the bootargs (the base blob + room for the longest
// command line + slack, rounded up to 4 KiB), so every worker's DTB has the
// same length and images differ only in the DTB's bytes.
func PersonaliseDTB(dtb []byte, bootargs string) ([]byte, error) {
	if len(bootargs)+1 > MaxBootargs {
		return nil, fmt.Errorf("bootargs of %d bytes exceed the kernel's %d-byte command line", len(bootargs), MaxBootargs-1)
	}
	if strings.ContainsRune(bootargs, 0) {
		return nil, fmt.Errorf("bootargs contain a NUL byte")
	}
	fdt, err := dt.ReadFDT(bytes.NewReader(dtb))
	if err != nil {
		return nil, fmt.Errorf("device tree: %w", err)
	}
	chosen, ok := fdt.RootNode.LookupChildByName("chosen")
	if !ok {
		chosen = dt.NewNode("chosen")
		fdt.RootNode.Children = append(fdt.RootNode.Children, chosen)
	}
	// The size budget: the blob without bootargs plus a full-length property.
	chosen.RemoveProperty("bootargs")
	var base bytes.Buffer
	if _, err := fdt.Write(&base); err != nil {
		return nil, fmt.Errorf("device tree: %w", err)
	}
	size := roundUp(base.Len()+12+MaxBootargs+len("bootargs")+1+dtbSlack, 4096)
	chosen.Update(dt.PropertyString("bootargs", bootargs))
	var out bytes.Buffer
	if _, err := fdt.Write(&out); err != nil {
		return nil, fmt.Errorf("device tree: %w", err)
	}
	b := out.Bytes()
	if len(b) > size {
		return nil, fmt.Errorf("device tree grew to %d bytes, over its %d-byte budget", len(b), size)
	}
	b = append(b, make([]byte, size-len(b))...)
	// The header's totalsize covers the padding: free space inside the blob.
	binary.BigEndian.PutUint32(b[4:], uint32(size))
	return b, nil
}

// DTBBootargs reads /chosen/bootargs from a device tree.
func DTBBootargs(dtb []byte) (string, error) {
	fdt, err := dt.ReadFDT(bytes.NewReader(dtb))
	if err != nil {
		return "", fmt.Errorf("device tree: %w", err)
	}
	return fdt.Root().Walk("chosen").Property("bootargs").AsString()
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }
