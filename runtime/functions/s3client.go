//go:build !mf_no_s3

package functions

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// s3Store is the S3 client of the S3 functions: path-style requests
// (http://endpoint/bucket/key) signed with AWS Signature Version 4, for the
// four calls they make. It replaced minio-go, whose packages' start-up
// (package inits, run at every worker's boot whether or not a function
// uses S3) and 2.4 MB of binary cost every worker's cold start
// (docs/performance.md).
type s3Store struct {
	endpoint string // scheme://host[:port]
	region   string
	access   string
	secret   string
	http     *http.Client
	now      func() time.Time
}

// S3Error is an error answer of the object store (its XML error body, or
// for a HEAD request only the status).
type S3Error struct {
	Status  int
	Code    string // e.g. NoSuchKey, NoSuchBucket, SignatureDoesNotMatch
	Message string
}

func (e *S3Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Code, e.Status)
	}
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// emptySHA256 is the SHA-256 of no bytes, the payload hash of bodiless requests.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// do sends one signed request; a non-2xx answer is an *S3Error (the body
// is read and closed then).
func (s *s3Store) do(ctx context.Context, method, bucket, key string, body []byte, header http.Header) (*http.Response, error) {
	u := s.endpoint + "/" + s3Escape(bucket)
	if key != "" {
		u += "/" + s3Escape(key)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range header {
		req.Header[k] = v
	}
	payload := emptySHA256
	if len(body) > 0 {
		sum := sha256.Sum256(body)
		payload = hex.EncodeToString(sum[:])
	}
	signV4(req, payload, s.access, s.secret, s.region, s.now())
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &S3Error{Status: resp.StatusCode}
	var x struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	if b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); xml.Unmarshal(b, &x) == nil {
		e.Code, e.Message = x.Code, x.Message
	}
	if e.Code == "" && resp.StatusCode == http.StatusNotFound {
		// HEAD answers carry no body.
		e.Code, e.Message = "NoSuchKey", "The specified key does not exist."
		if key == "" {
			e.Code, e.Message = "NoSuchBucket", "The specified bucket does not exist"
		}
	}
	if e.Code == "" {
		e.Code = http.StatusText(resp.StatusCode)
	}
	return nil, e
}

// putObject stores data under bucket/key and returns the object's ETag.
func (s *s3Store) putObject(ctx context.Context, bucket, key string, data []byte) (string, error) {
	resp, err := s.do(ctx, http.MethodPut, bucket, key, data, http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return strings.Trim(resp.Header.Get("ETag"), `"`), nil
}

// getObject opens bucket/key; size is the announced length (-1: unknown).
func (s *s3Store) getObject(ctx context.Context, bucket, key string) (body io.ReadCloser, size int64, err error) {
	resp, err := s.do(ctx, http.MethodGet, bucket, key, nil, nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// bucketExists asks with HEAD bucket.
func (s *s3Store) bucketExists(ctx context.Context, bucket string) (bool, error) {
	resp, err := s.do(ctx, http.MethodHead, bucket, "", nil, nil)
	if err == nil {
		resp.Body.Close()
		return true, nil
	}
	if e, ok := err.(*S3Error); ok && e.Status == http.StatusNotFound {
		return false, nil
	}
	return false, err
}

// makeBucket creates bucket; one that is already ours is no error.
func (s *s3Store) makeBucket(ctx context.Context, bucket string) error {
	var body []byte
	if s.region != "" && s.region != "us-east-1" {
		body = []byte(`<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>` +
			s.region + `</LocationConstraint></CreateBucketConfiguration>`)
	}
	resp, err := s.do(ctx, http.MethodPut, bucket, "", body, nil)
	if err != nil {
		if e, ok := err.(*S3Error); ok && e.Code == "BucketAlreadyOwnedByYou" {
			return nil
		}
		return err
	}
	resp.Body.Close()
	return nil
}

// signV4 adds the AWS Signature Version 4 headers to req: x-amz-date,
// x-amz-content-sha256 (payload, the body's hex SHA-256) and Authorization.
// It signs the host, every x-amz-* header, and Range and Content-Type when
// present (AWS's "Signature Calculations for the Authorization Header").
func signV4(req *http.Request, payload, access, secret, region string, t time.Time) {
	t = t.UTC()
	amzDate, day := t.Format("20060102T150405Z"), t.Format("20060102")
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-Content-Sha256", payload)

	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	headers := map[string]string{"host": host}
	for k, v := range req.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-amz-") || lk == "range" || lk == "content-type" {
			headers[lk] = strings.TrimSpace(strings.Join(v, ","))
		}
	}
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	var canonHeaders strings.Builder
	for _, k := range names {
		canonHeaders.WriteString(k + ":" + headers[k] + "\n")
	}
	signed := strings.Join(names, ";")
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{req.Method, path, canonicalQuery(req.URL.Query()),
		canonHeaders.String(), signed, payload}, "\n")
	scope := day + "/" + region + "/s3/aws4_request"
	sum := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := hmacSHA256([]byte("AWS4"+secret), day)
	for _, part := range []string{region, "s3", "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	sig := hex.EncodeToString(hmacSHA256(key, toSign))
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+access+"/"+scope+
		",SignedHeaders="+signed+",Signature="+sig)
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// canonicalQuery is the query, sorted, each name and value escaped.
func canonicalQuery(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, s3Escape(k)+"="+s3Escape(v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

// s3Escape escapes all but the unreserved characters (RFC 3986), as
// SigV4's canonical request wants; '/' too (a key's '/' would be kept, but
// our keys are single path elements).
func s3Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
