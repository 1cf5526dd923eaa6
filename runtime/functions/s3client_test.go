//go:build !mf_no_s3

package functions

import (
	"net/http"
	"testing"
	"time"
)

// AWS's published Signature Version 4 example for S3 ("GET Object" in
// "Signature Calculations for the Authorization Header: Transferring
// Payload in a Single Chunk"): the same request must get the same
// signature.
func TestSignV4AWSExample(t *testing.T) {
	req, err := http.NewRequest(http.MethodGet, "https://examplebucket.s3.amazonaws.com/test.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=0-9")
	signV4(req, emptySHA256, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1",
		time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC))
	want := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request," +
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date," +
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
	if got := req.Header.Get("Authorization"); got != want {
		t.Fatalf("Authorization:\n got %s\nwant %s", got, want)
	}
	if req.Header.Get("X-Amz-Date") != "20130524T000000Z" {
		t.Fatalf("X-Amz-Date %q", req.Header.Get("X-Amz-Date"))
	}
}

func TestS3Escape(t *testing.T) {
	for in, want := range map[string]string{
		"resolv.conf": "resolv.conf", "a b": "a%20b", "x/y": "x%2Fy", "ü": "%C3%BC", "A-Z_0.9~": "A-Z_0.9~",
	} {
		if got := s3Escape(in); got != want {
			t.Errorf("s3Escape(%q) = %q, want %q", in, got, want)
		}
	}
}
