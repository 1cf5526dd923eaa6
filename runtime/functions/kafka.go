//go:build !mf_no_kafka

package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func init() {
	Register("upload_kafka", uploadKafka)
	Register("read_kafka", readKafka)
}

const (
	// defaultKafkaGroup is read_kafka's consumer group when the job names none.
	defaultKafkaGroup = "microfaas"
	// maxKafkaMessageBytes is Kafka's default maximum message size.
	maxKafkaMessageBytes = 1_000_000
	// kafkaDeliveryTimeout bounds one produce even if the job has no deadline.
	kafkaDeliveryTimeout = 30 * time.Second
)

// topicRE is Kafka's rule for topic names, compiled on first use: its
// counted repetition makes a large program, which would cost every worker's
// start (GODEBUG=inittrace=1) though few run Kafka.
var topicRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`) })

func topicArg(a *args, def string) (string, error) {
	var topic string
	var err error
	if def == "" {
		topic, err = a.str("topic", 249)
	} else {
		topic, err = a.optStr("topic", def, 249)
	}
	if err != nil {
		return "", err
	}
	if !topicRE().MatchString(topic) || topic == "." || topic == ".." {
		return "", argErrorf(a.fn, "topic", "%q is not a valid Kafka topic name (1..249 of A-Z a-z 0-9 . _ -)", truncate(topic, 64))
	}
	return topic, nil
}

// kafkaClient makes a client from the "kafka" service's settings — brokers
// (comma-separated host:port, required), dial_timeout (5s) — plus extra
// options, and checks that a broker answers.
func kafkaClient(ctx context.Context, fn string, env Env, extra ...kgo.Opt) (*kgo.Client, error) {
	s, err := env.Service("kafka")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	list, err := requireSetting(fn, "kafka", s, "brokers")
	if err != nil {
		return nil, err
	}
	var brokers []string
	for _, b := range strings.Split(list, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		return nil, fmt.Errorf("%s: service \"kafka\": brokers=%q names no broker", fn, list)
	}
	timeout, err := settingDuration(fn, "kafka", s, "dial_timeout", defaultDialTimeout)
	if err != nil {
		return nil, err
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.DialTimeout(timeout),
		kgo.RetryTimeout(timeout),
	}, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: service \"kafka\": %w", fn, err)
	}
	// Ping tries each broker once: an unreachable cluster is reported now,
	// not after retries.
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cl.Ping(pingCtx); err != nil {
		cl.Close()
		addr := strings.Join(brokers, ",")
		if jobErr(ctx) == nil {
			if jobErr(pingCtx) != nil {
				// %v: the ping's deadline is not the job's.
				err = fmt.Errorf("no broker answered within %s (dial_timeout): %v", timeout, err)
			}
			return nil, &UnreachableError{Func: fn, Service: "kafka", Addr: addr, Err: err}
		}
		return nil, connectError(ctx, fn, "kafka", addr, err)
	}
	return cl, nil
}

// uploadKafka produces one message to a topic and waits for the broker to
// acknowledge it. groupID and consumerID, which the original sent to a
// REST proxy, are accepted and ignored.
func uploadKafka(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "upload_kafka"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	topic, err := topicArg(a, "")
	if err != nil {
		return nil, err
	}
	message, err := a.str("message", maxKafkaMessageBytes)
	if err != nil {
		return nil, err
	}
	key, err := a.optStr("key", "", 1024)
	if err != nil {
		return nil, err
	}
	cl, err := kafkaClient(ctx, fn, env,
		kgo.AllowAutoTopicCreation(),
		kgo.RecordDeliveryTimeout(kafkaDeliveryTimeout))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rec := &kgo.Record{Topic: topic, Value: []byte(message)}
	if key != "" {
		rec.Key = []byte(key)
	}
	got, err := cl.ProduceSync(ctx, rec).First()
	if err != nil {
		return nil, opError(ctx, fn, "kafka", "produce to "+topic, err)
	}
	return map[string]any{"topic": topic, "partition": got.Partition, "offset": got.Offset}, nil
}

// readKafka consumes up to max messages of a topic as a member of consumer
// group groupID, waiting at most wait_ms for the first, and commits what it
// read so that the group's next read continues after it.
func readKafka(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "read_kafka"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	topic, err := topicArg(a, DefaultKafkaTopic)
	if err != nil {
		return nil, err
	}
	group, err := a.optName("groupID", defaultKafkaGroup, 249)
	if err != nil {
		return nil, err
	}
	consumer, err := a.optName("consumerID", "microfaas-worker", 249)
	if err != nil {
		return nil, err
	}
	maxRecords, err := a.optInt("max", 1, 1, 1000)
	if err != nil {
		return nil, err
	}
	wait, err := a.optMillis("wait_ms", 5*time.Second, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	if wait < 100*time.Millisecond {
		return nil, argErrorf(fn, "wait_ms", "%d is too short: at least 100", wait.Milliseconds())
	}
	cl, err := kafkaClient(ctx, fn, env,
		kgo.ClientID(consumer),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	fetches := cl.PollRecords(waitCtx, int(maxRecords))
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", fn, topic, err)
	}
	for _, fe := range fetches.Errors() {
		if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
			continue // waited wait_ms: fewer messages than max, maybe none
		}
		return nil, opError(ctx, fn, "kafka", fmt.Sprintf("fetch %s partition %d", fe.Topic, fe.Partition), fe.Err)
	}
	records := fetches.Records()
	messages := make([]string, 0, len(records))
	for _, r := range records {
		messages = append(messages, string(r.Value))
	}
	if len(records) > 0 {
		if err := cl.CommitRecords(ctx, records...); err != nil {
			return nil, opError(ctx, fn, "kafka", "commit offsets of group "+group, err)
		}
	}
	return map[string]any{"topic": topic, "group": group, "messages": messages}, nil
}
