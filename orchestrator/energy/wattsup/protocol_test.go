package wattsup

import (
	"errors"
	"reflect"
	"testing"
)

func TestParsePacket(t *testing.T) {
	for _, tc := range []struct {
		body string
		want Packet
		err  error
	}{
		{"d,-,3,1234,1200,567", Packet{Cmd: 'd', Sub: "-", Args: []string{"1234", "1200", "567"}}, nil},
		{"R,W,0", Packet{Cmd: 'R', Sub: "W", Args: []string{}}, nil},
		{"L,W,3,E,,1", Packet{Cmd: 'L', Sub: "W", Args: []string{"E", "", "1"}}, nil},
		{"d,-,4,1,2,3", Packet{}, ErrBadPacket}, // count says 4, 3 follow
		{"d,-", Packet{}, ErrBadPacket},         // no count
		{"dd,-,0", Packet{}, ErrBadPacket},      // command is one letter
		{"d,-,x,1", Packet{}, ErrBadPacket},     // count not a number
		{"d,-,-1", Packet{}, ErrBadPacket},      // negative count
	} {
		got, err := ParsePacket(tc.body)
		if !errors.Is(err, tc.err) {
			t.Errorf("%q: err %v, want %v", tc.body, err, tc.err)
			continue
		}
		if err == nil && (got.Cmd != tc.want.Cmd || got.Sub != tc.want.Sub || len(got.Args) != len(tc.want.Args) ||
			(len(got.Args) > 0 && !reflect.DeepEqual(got.Args, tc.want.Args))) {
			t.Errorf("%q = %+v, want %+v", tc.body, got, tc.want)
		}
	}
}

func TestScannerResynchronises(t *testing.T) {
	long := make([]byte, maxPacket+10)
	for i := range long {
		long[i] = '1'
	}
	for _, tc := range []struct {
		name    string
		chunks  []string
		want    []string // first argument of each packet found
		dropped int
	}{
		{"clean", []string{"#d,-,1,10;\r\n#d,-,1,20;\r\n"}, []string{"10", "20"}, 0},
		{"split everywhere", []string{"#", "d,-", ",1,1", "0;\r", "\n#d,-,1,", "20", ";"}, []string{"10", "20"}, 0},
		{"noise between", []string{"\x00\xffjunk;;,\r\n#d,-,1,10;garbage,,;#d,-,1,20;"}, []string{"10", "20"}, 0},
		{"cut short then next", []string{"#d,-,1,1", "#d,-,1,20;"}, []string{"20"}, 1},
		{"cut short, noise, next", []string{"#d,-,2,1", "\r\n", "#d,-,1,30;"}, []string{"30"}, 1},
		{"count mismatch", []string{"#d,-,2,10;#d,-,1,20;"}, []string{"20"}, 1},
		{"overlong", []string{"#d,-,1,", string(long), ";#d,-,1,40;"}, []string{"40"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Scanner
			var got []string
			for _, c := range tc.chunks {
				for _, p := range s.Feed([]byte(c)) {
					got = append(got, p.Args[0])
				}
			}
			if !reflect.DeepEqual(got, tc.want) || s.Dropped != tc.dropped {
				t.Errorf("packets %v dropped %d, want %v dropped %d", got, s.Dropped, tc.want, tc.dropped)
			}
		})
	}
}

func TestParseDataUnits(t *testing.T) {
	p, err := ParsePacket("d,-,18,1234,1203,1027,56,0,0,0,1300,1210,1100,1200,1190,1000,85,100,0,600,1452")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseData(p, DefaultFields)
	if err != nil {
		t.Fatal(err)
	}
	want := Reading{Watts: 123.4, Volts: 120.3, Amps: 1.027, WattHours: 5.6, PowerFactor: 85, Hz: 60, VA: 145.2}
	if r != want {
		t.Errorf("reading %+v, want %+v", r, want)
	}
	// A meter told to log fewer fields names them in its header.
	p, _ = ParsePacket("d,-,3,1200,987,25")
	r, err = ParseData(p, []string{"V", "W", "PF"})
	if err != nil || r.Watts != 98.7 || r.Volts != 120 || r.PowerFactor != 25 {
		t.Errorf("reordered fields: %+v %v", r, err)
	}
	for _, body := range []string{
		"d,-,3,12x4,1200,5", // not a number
		"d,-,3,-5,1200,5",   // negative
		"d,-,2,1200,5",      // fewer fields than the header
	} {
		p, _ := ParsePacket(body)
		if _, err := ParseData(p, []string{"W", "V", "PF"}); !errors.Is(err, ErrBadPacket) {
			t.Errorf("%q: err %v, want ErrBadPacket", body, err)
		}
	}
	p, _ = ParsePacket("d,-,1,1200")
	if _, err := ParseData(p, []string{"V"}); !errors.Is(err, ErrBadPacket) {
		t.Errorf("no W field: err %v, want ErrBadPacket", err)
	}
}
