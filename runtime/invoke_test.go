package runtime

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/microfaas/microfaas/runtime/functions"
)

func TestInvoke(t *testing.T) {
	tests := []struct {
		name, fn, args, result string
		failed                 bool
	}{
		{"built-in", "cascading_md5", `{"data":"abc","rounds":1}`, `"900150983cd24fb0d6963f7d28e17f72"`, false},
		{"unknown function", "no_such_function", `{}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Invoke(context.Background(), functions.Env{}, tt.fn, json.RawMessage(tt.args))
			if res.Function != tt.fn || string(res.Result) != tt.result || (res.Error != "") != tt.failed || res.ExecMS < 0 {
				t.Fatalf("%+v", res)
			}
		})
	}
}
