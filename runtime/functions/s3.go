//go:build !mf_no_s3

package functions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

func init() {
	Register("upload_file", uploadFile)
	Register("download_file", downloadFile)
}

const (
	// maxUploadBytes bounds the file upload_file reads.
	maxUploadBytes = 16 << 20
	// MaxDownloadBytes bounds the object download_file writes: the worker's
	// /tmp is memory.
	MaxDownloadBytes = 64 << 20
	// s3ResponseTimeout bounds the wait for a response's headers once the
	// request has been sent.
	s3ResponseTimeout = 30 * time.Second
)

// objectNameRE is what download_file accepts as an object (and file) name:
// one path element, no leading dot, so it cannot leave DownloadDir.
// Compiled on first use, as topicRE.
var objectNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$`) })

// uploadFile reads /etc/<file> on the worker (Env.EtcDir) and PUTs it to the
// bucket under the same name.
func uploadFile(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "upload_file"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	file, err := a.str("file", 64)
	if err != nil {
		return nil, err
	}
	allowed := map[string]bool{}
	for _, f := range UploadFiles {
		allowed[f] = true
	}
	if !allowed[file] {
		return nil, argErrorf(fn, "file", "%q is not one of %v", truncate(file, 64), sortedKeys(allowed))
	}
	client, bucket, addr, err := newS3Client(fn, env)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(env.etcDir(), file)
	data, err := readFileLimited(path, maxUploadBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	sum := sha256.Sum256(data)
	etag, err := client.putObject(ctx, bucket, file, data)
	if err != nil {
		return nil, s3Error(ctx, fn, addr, "PUT "+bucket+"/"+file, err)
	}
	return map[string]any{
		"bucket": bucket,
		"key":    file,
		"size":   len(data),
		"sha256": hex.EncodeToString(sum[:]),
		"etag":   etag,
	}, nil
}

// readFileLimited reads a regular file of at most limit bytes.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("reading %s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("reading %s: larger than %d bytes", path, limit)
	}
	return data, nil
}

// downloadFile GETs an object and writes it to Env.DownloadDir/<file>.
func downloadFile(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "download_file"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	file, err := a.str("file", 255)
	if err != nil {
		return nil, err
	}
	if !objectNameRE().MatchString(file) {
		return nil, argErrorf(fn, "file", "%q is not a plain file name (letters, digits, '.', '_', '-'; no leading '.')", truncate(file, 64))
	}
	client, bucket, addr, err := newS3Client(fn, env)
	if err != nil {
		return nil, err
	}
	obj, size, err := client.getObject(ctx, bucket, file)
	if err != nil {
		return nil, s3Error(ctx, fn, addr, "GET "+bucket+"/"+file, err)
	}
	defer obj.Close()
	if size > MaxDownloadBytes {
		return nil, fmt.Errorf("%s: object %s/%s is %d bytes, more than the %d-byte limit", fn, bucket, file, size, MaxDownloadBytes)
	}
	dir := env.downloadDir()
	tmp, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(obj, MaxDownloadBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, s3Error(ctx, fn, addr, "GET "+bucket+"/"+file, err)
	}
	if n > MaxDownloadBytes {
		return nil, fmt.Errorf("%s: object %s/%s is more than the %d-byte limit", fn, bucket, file, MaxDownloadBytes)
	}
	if size >= 0 && n != size {
		return nil, fmt.Errorf("%s: object %s/%s: got %d bytes, the server announced %d", fn, bucket, file, n, size)
	}
	dst := filepath.Join(dir, file)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	return map[string]any{
		"bucket": bucket,
		"key":    file,
		"path":   dst,
		"size":   n,
		"sha256": hex.EncodeToString(h.Sum(nil)),
	}, nil
}

// s3Error classifies an error from the object store.
func s3Error(ctx context.Context, fn, addr, op string, err error) error {
	if ctx.Err() == nil && isNetworkError(err) {
		return &UnreachableError{Func: fn, Service: "s3", Addr: addr, Err: err}
	}
	return opError(ctx, fn, "s3", op+" at "+addr, err)
}

// newS3Client makes a client from the "s3" service's settings: endpoint
// (host:port, or an http:// or https:// URL), access_key, secret_key,
// bucket (all required), region (us-east-1), secure (false; an https://
// endpoint sets it), dial_timeout (5s). Buckets are addressed path-style
// (http://endpoint/bucket/key), which MinIO, versitygw and AWS accept.
func newS3Client(fn string, env Env) (client *s3Store, bucket, addr string, err error) {
	s, err := env.Service("s3")
	if err != nil {
		return nil, "", "", fmt.Errorf("%s: %w", fn, err)
	}
	return s3Client(fn, s)
}

// s3Client makes a client from the "s3" service's settings (see
// docs/functions.md) and returns it with the bucket and the endpoint. who
// names the caller in error messages.
func s3Client(who string, s map[string]string) (client *s3Store, bucket, addr string, err error) {
	endpoint, err := requireSetting(who, "s3", s, "endpoint")
	if err != nil {
		return nil, "", "", err
	}
	access, err := requireSetting(who, "s3", s, "access_key")
	if err != nil {
		return nil, "", "", err
	}
	secret, err := requireSetting(who, "s3", s, "secret_key")
	if err != nil {
		return nil, "", "", err
	}
	if bucket, err = requireSetting(who, "s3", s, "bucket"); err != nil {
		return nil, "", "", err
	}
	secure, err := settingBool(who, "s3", s, "secure", false)
	if err != nil {
		return nil, "", "", err
	}
	timeout, err := settingDuration(who, "s3", s, "dial_timeout", defaultDialTimeout)
	if err != nil {
		return nil, "", "", err
	}
	host := endpoint
	if u, perr := url.Parse(endpoint); perr == nil && (u.Scheme == "http" || u.Scheme == "https") {
		host, secure = u.Host, u.Scheme == "https"
		if u.Path != "" && u.Path != "/" {
			return nil, "", "", fmt.Errorf("%s: service \"s3\": endpoint %q must not have a path", who, endpoint)
		}
	}
	if host == "" {
		return nil, "", "", fmt.Errorf("%s: service \"s3\": endpoint %q has no host", who, endpoint)
	}
	dialer := &net.Dialer{Timeout: timeout}
	transport := &http.Transport{
		Proxy:                 nil, // workers talk to the store directly
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   timeout,
		ExpectContinueTimeout: time.Second,
		// Counted from the end of the request: a store that takes the
		// upload and never answers does not hold the worker until the job's
		// deadline.
		ResponseHeaderTimeout: s3ResponseTimeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
	}
	scheme := "http"
	if secure {
		scheme = "https"
	}
	// One job, one try: the orchestrator decides about retries.
	client = &s3Store{endpoint: scheme + "://" + host, region: valueOr(s["region"], "us-east-1"),
		access: access, secret: secret, http: &http.Client{Transport: transport}, now: time.Now}
	return client, bucket, host, nil
}

// SampleObject returns the deterministic content SeedS3 stores under name.
func SampleObject(name string, size int) []byte {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(h.Sum64(), 63302))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// SeedS3 creates the bucket the "s3" settings name (if missing) and puts in
// it the DownloadSamples objects download_file's generated inputs ask for.
func SeedS3(ctx context.Context, s map[string]string) error {
	client, bucket, addr, err := s3Client("seed s3", s)
	if err != nil {
		return err
	}
	exists, err := client.bucketExists(ctx, bucket)
	if err != nil {
		return fmt.Errorf("seed s3: checking bucket %q at %s: %w", bucket, addr, err)
	}
	if !exists {
		if err := client.makeBucket(ctx, bucket); err != nil {
			return fmt.Errorf("seed s3: creating bucket %q at %s: %w", bucket, addr, err)
		}
	}
	for _, o := range DownloadSamples {
		data := SampleObject(o.Name, o.Size)
		if _, err := client.putObject(ctx, bucket, o.Name, data); err != nil {
			return fmt.Errorf("seed s3: putting %s/%s at %s: %w", bucket, o.Name, addr, err)
		}
	}
	return nil
}
