package functions

// Data about the service functions that the load generator's inputs
// (inputs.go) and the test seeds use. It lives outside the service files so
// a worker built without a client (build tags, services.go) still compiles.

// DefaultKafkaTopic is the topic read_kafka reads when the job names
// none: the original load generator's read_kafka inputs named no topic,
// and its upload_kafka inputs wrote to this one.
const DefaultKafkaTopic = "SampleTopic"

// UploadFiles are the files under /etc that upload_file may send, as in the
// original load generator: they exist in every worker's initramfs.
var UploadFiles = []string{"group", "hostname", "hosts", "inittab", "passwd", "profile", "resolv.conf", "shadow"}

// DownloadSamples are the objects the original load generator asked
// download_file to fetch; SeedS3 puts objects of these names (and sizes in
// bytes) in the bucket.
var DownloadSamples = []struct {
	Name string
	Size int
}{
	{"file-sample_1MB.doc", 1 << 20},
	{"file_example_ODS_5000.ods", 256 << 10},
	{"file_example_PPT_1MB.ppt", 1 << 20},
}
