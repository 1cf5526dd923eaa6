package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/microfaas/microfaas/bundle"
)

// Flatten reads an image's layers into a tree that cannot reach outside
// itself once it lies in a rootfs/ folder (a baked-in function's
// /functions/NAME/rootfs in the initramfs, a bundle unpacked on a worker):
//   - an entry below a symlink or a file is refused (the unpacker would
//     follow the link: issue 18, attack 1);
//   - every symlink is rewritten to a relative target that climbs only to
//     the rootfs root and then descends without "..". Inside the sandbox
//     (rootfs is /) it means what it meant: absolute targets are kept
//     meaningful, not refused (real images need /lib64/ld-linux… -> /lib/…),
//     and ".." above the root stops at the root, as the kernel does at /.
//     Seen from the worker's own root it can no longer leave the rootfs.
//     A target with ".." after a component that is itself a link is refused:
//     its meaning depends on where that link points;
//   - hard links become copies of regular files of the tree (counted again
//     against Limits.Bytes), resolved after all layers are read;
//   - device nodes and FIFOs are dropped (the sandbox mounts its own /dev),
//     setuid and setgid bits cleared;
//   - directories the layers imply but do not list are added (mode 0755);
//   - whiteouts are applied by mutate.Extract, which refuses ".." names; a
//     whiteout never writes, and the first spelling of a path wins as in
//     Extract (upper layers come first).
func Flatten(img v1.Image, lim bundle.Limits) (*bundle.Tree, error) {
	rc := mutate.Extract(boundedImage{Image: img, left: &stream{left: lim.Stream, limit: lim.Stream}})
	defer rc.Close()
	t := &bundle.Tree{Files: map[string]bundle.Entry{}}
	hardlinks := map[string]string{}
	var order []string // hard links in stream order, for deterministic errors
	var total int64
	var count int
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// Extract writes the tar trailer before it reports its error
			// (an unsafe name, a bad layer digest, the stream limit): only
			// the end of the pipe tells whether the tree is whole.
			if _, err := io.Copy(io.Discard, rc); err != nil {
				return nil, err
			}
			break
		}
		if err != nil {
			return nil, err
		}
		if count++; count > lim.Files {
			return nil, fmt.Errorf("%w: more than %d entries: make the image smaller (a slim or distroless base, one layer)", bundle.ErrImageTooLarge, lim.Files)
		}
		p := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if p == "" {
			continue
		}
		if _, seen := t.Files[p]; seen || hardlinks[p] != "" {
			continue
		}
		total += int64(len(p) + len(h.Linkname))
		if h.Typeflag == tar.TypeReg {
			if h.Size > lim.FileBytes {
				return nil, fmt.Errorf("%w: %s is %d bytes, the limit for one file is %d: leave it out of the function's image", bundle.ErrImageTooLarge, p, h.Size, lim.FileBytes)
			}
			total += h.Size
		}
		if total > lim.Bytes {
			return nil, fmt.Errorf("%w: more than %d bytes of files (at %s): make the image smaller (a slim or distroless base)", bundle.ErrImageTooLarge, lim.Bytes, p)
		}
		mode := h.Mode & 0o7777
		if mode&0o6000 != 0 {
			mode &^= 0o6000 // a function must not gain another uid or gid
			t.Stripped++
		}
		switch h.Typeflag {
		case tar.TypeDir:
			t.Files[p] = bundle.Entry{Type: tar.TypeDir, Mode: mode}
		case tar.TypeSymlink:
			if h.Linkname == "" {
				return nil, fmt.Errorf("%w: symlink %s has an empty target: remove it from the image", bundle.ErrUnsafeImage, p)
			}
			t.Files[p] = bundle.Entry{Type: tar.TypeSymlink, Target: h.Linkname}
		case tar.TypeLink:
			hardlinks[p] = strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			order = append(order, p)
		case tar.TypeReg:
			b := make([]byte, h.Size)
			if _, err := io.ReadFull(tr, b); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			t.Files[p] = bundle.Entry{Type: tar.TypeReg, Mode: mode, Data: b}
		default:
			t.Dropped++ // device nodes, FIFOs
		}
	}
	for _, p := range order {
		target, ok := t.Files[hardlinks[p]]
		if !ok || target.Type != tar.TypeReg {
			return nil, fmt.Errorf("%w: hard link %s -> %s: the image has no regular file there: make it a copy or a symlink", bundle.ErrUnsafeImage, p, hardlinks[p])
		}
		if total += int64(len(target.Data)); total > lim.Bytes {
			return nil, fmt.Errorf("%w: more than %d bytes of files with hard links copied (at %s): make the image smaller", bundle.ErrImageTooLarge, lim.Bytes, p)
		}
		t.Files[p] = target
	}
	if err := confine(t); err != nil {
		return nil, err
	}
	// Directories the layers imply but do not list become entries (0755),
	// counted like the others, so the tree is what the bundle holds.
	for _, p := range t.Sorted() {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := t.Files[d]; ok {
				break
			}
			t.Files[d] = bundle.Entry{Type: tar.TypeDir, Mode: 0o755}
			if len(t.Files) > lim.Files {
				return nil, fmt.Errorf("%w: more than %d entries with the directories they need: make the image smaller", bundle.ErrImageTooLarge, lim.Files)
			}
		}
	}
	return t, nil
}

// confine refuses entries below a non-directory and rewrites every symlink
// to stay inside the tree (see flatten).
func confine(t *bundle.Tree) error {
	for _, p := range t.Sorted() {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			e, ok := t.Files[d]
			switch {
			case !ok || e.Type == tar.TypeDir:
			case e.Type == tar.TypeSymlink:
				return fmt.Errorf("%w: %s is below the symlink %s -> %s, and unpacking it (the kernel's initramfs unpacker, a worker) would follow the link and write it outside the image: rebuild the image with %s as a real directory",
					bundle.ErrUnsafeImage, p, d, e.Target, d)
			default:
				return fmt.Errorf("%w: %s is below the file %s: rebuild the image without one of them", bundle.ErrUnsafeImage, p, d)
			}
		}
	}
	for _, p := range t.Sorted() {
		e := t.Files[p]
		if e.Type != tar.TypeSymlink {
			continue
		}
		target, err := inRoot(t, p, e.Target)
		if err != nil {
			return err
		}
		e.Target = target
		t.Files[p] = e
	}
	return nil
}

// inRoot rewrites the target of the link at p as "../"×depth(p) followed by
// a path without "..": from p's directory (real directories, see confine)
// it climbs exactly to the rootfs root and then descends.
func inRoot(t *bundle.Tree, p, target string) (string, error) {
	var cur []string // resolved components below the root
	if !path.IsAbs(target) {
		if dir := path.Dir(p); dir != "." {
			cur = strings.Split(dir, "/")
		}
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			for i := range cur {
				if e, ok := t.Files[strings.Join(cur[:i+1], "/")]; ok && e.Type == tar.TypeSymlink {
					return "", fmt.Errorf("%w: symlink %s -> %s climbs out of the symlink %s with \"..\": its meaning depends on that link; point it at the path it means", bundle.ErrUnsafeImage, p, target, strings.Join(cur[:i+1], "/"))
				}
			}
			if len(cur) > 0 {
				cur = cur[:len(cur)-1] // at the root, ".." stays there
			}
		default:
			cur = append(cur, c)
		}
	}
	up := strings.Count(p, "/")
	rel := strings.TrimSuffix(strings.Repeat("../", up)+strings.Join(cur, "/"), "/")
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

// boundedImage counts the uncompressed bytes mutate.Extract reads from all
// layers, whiteouts and overwritten files included, and fails the read past
// the limit: Extract keeps state for every entry it reads, even the ones it
// never hands to flatten.
type boundedImage struct {
	v1.Image
	left *stream
}

// stream is the budget of uncompressed bytes all layers share.
type stream struct{ left, limit int64 }

func (b boundedImage) Layers() ([]v1.Layer, error) {
	ls, err := b.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = boundedLayer{Layer: l, left: b.left}
	}
	return out, nil
}

type boundedLayer struct {
	v1.Layer
	left *stream
}

func (l boundedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	return &boundedReader{rc: rc, left: l.left}, nil
}

type boundedReader struct {
	rc   io.ReadCloser
	left *stream
}

func (r *boundedReader) Read(p []byte) (int, error) {
	if r.left.left <= 0 {
		// A layer that ends exactly at the limit is fine.
		var one [1]byte
		if n, err := r.rc.Read(one[:]); n == 0 && err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("%w: its layers hold more than %d uncompressed bytes: make the image smaller (a slim or distroless base, fewer layers)", bundle.ErrImageTooLarge, r.left.limit)
	}
	if int64(len(p)) > r.left.left {
		p = p[:r.left.left]
	}
	n, err := r.rc.Read(p)
	r.left.left -= int64(n)
	return n, err
}

func (r *boundedReader) Close() error { return r.rc.Close() }
