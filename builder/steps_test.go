package builder

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microfaas/microfaas/cluster"
)

func TestImageSetRequests(t *testing.T) {
	example := filepath.Join(repo(t), "configs", "cluster.example.yaml")
	c, err := cluster.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		set     ImageSet
		want    []string // the images' paths
		wantErr string
	}{
		{"no cluster", ImageSet{Medium: MediumSD, Worker: "bbb0", Out: "x.img"}, nil, "--cluster FILE is required"},
		{"no out", ImageSet{Medium: MediumSD, ClusterFile: example, Worker: "bbb0"}, nil, "--out is required"},
		{"worker and all", ImageSet{Medium: MediumSD, ClusterFile: example, Worker: "bbb0", All: true, Out: "d"}, nil, "either --worker ID or --all"},
		{"neither", ImageSet{Medium: MediumSD, ClusterFile: example, Out: "d"}, nil, "either --worker ID or --all"},
		{"all flashers", ImageSet{Medium: MediumFlasher, ClusterFile: example, All: true, Out: "d"}, nil, "one worker at a time"},
		{"a VM worker", ImageSet{Medium: MediumEMMC, ClusterFile: example, Worker: "vm0", Out: "x.img"}, nil, "vm0"},
		{"one board", ImageSet{Medium: MediumEMMC, ClusterFile: example, Worker: "bbb3", Out: "x.img"}, []string{"x.img"}, ""},
		{"every board", ImageSet{Medium: MediumSD, ClusterFile: example, All: true, Out: "d"}, []string{
			"d/bbb0-sdcard.img", "d/bbb1-sdcard.img", "d/bbb2-sdcard.img", "d/bbb3-sdcard.img", "d/bbb4-sdcard.img",
			"d/bbb5-sdcard.img", "d/bbb6-sdcard.img", "d/bbb7-sdcard.img", "d/bbb8-sdcard.img", "d/bbb9-sdcard.img"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.set.Check()
			var reqs []ImageRequest
			if err == nil {
				reqs, err = tc.set.Requests(c)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range reqs {
				got = append(got, r.Out)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("images %v, want %v", got, tc.want)
			}
		})
	}
}

// A set the cluster file cannot satisfy fails before anything is built:
// options (which finds the repository, then the build) is never called.
func TestImageStepChecksBeforeBuilding(t *testing.T) {
	example := filepath.Join(repo(t), "configs", "cluster.example.yaml")
	called := false
	options := func() (Options, error) { called = true; return Options{}, nil }
	var out bytes.Buffer
	err := ImageStep(context.Background(), ImageSet{Medium: MediumSD, ClusterFile: example, Worker: "nope", Out: "x.img"},
		options, t.TempDir(), false, &out)
	if err == nil || called {
		t.Errorf("error %v, options called %v: want an error before the build", err, called)
	}
}
