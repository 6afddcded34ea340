package deploy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

// The presence service's topics (its defaults, which the chart keeps).
const (
	presenceEvents = "palaver.presence.events"
	presenceState  = "palaver.presence.state"
)

// TestKafkaUsersAllowWhatEachComponentDoes checks the KafkaUsers of
// k8s/kafka against Kafka's own authorizer. A broker with a SCRAM-SHA-512
// listener and the StandardAuthorizer gets each KafkaUser's credentials and
// exactly the ACLs its YAML declares (mapped from Strimzi's terms to
// Kafka's); the chart's containers then run as their users, with the
// passwords as Strimzi's Secrets would hold them, and do their work (the
// operator provisions, grows, reconfigures and deletes a room; the gateway
// carries a load; history serves a search; presence counts the members,
// and a new presence replica reads their states back). The operator's
// replica reassignment needs more brokers than the test runs, so its
// cluster permissions are exercised through the operator's own
// provisioning code under its user. Then each user is refused what its
// component does not do, and last, every declared ACL must have allowed
// something the components did, as the authorizer logged it.
func TestKafkaUsersAllowWhatEachComponentDoes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries against a real Kafka broker: not in -short mode")
	}
	users := kafkaUsers(t)
	bins := buildBinaries(t, "gateway", "operator", "history", "presence", "palaver")
	kc := startKafka(t, kafkatest.Options{Nodes: 1, SCRAM: true})
	superuser := kafkaClient(t, kafkabus.Config{Brokers: []string{kc.Bootstrap()}})

	// Each user's SCRAM credential and ACLs, as Strimzi's User Operator
	// makes them.
	passwords := map[string][]byte{}
	var upserts []kadm.UpsertSCRAM
	var creations []kmsg.CreateACLsRequestCreation
	for name, spec := range users {
		require.Equal(t, "scram-sha-512", spec.Authentication.Type, "KafkaUser %s authentication", name)
		passwords[name] = []byte(rand.Text())
		upserts = append(upserts, kadm.UpsertSCRAM{User: name, Mechanism: kadm.ScramSha512, Password: string(passwords[name])})
		creations = append(creations, kafkaACLs(t, name, spec)...)
	}
	altered, err := kadm.NewClient(superuser).AlterUserSCRAMs(t.Context(), nil, upserts)
	require.NoError(t, err)
	for _, a := range altered {
		require.NoError(t, a.Err, "SCRAM credential of %s", a.User)
	}
	req := kmsg.NewPtrCreateACLsRequest()
	req.Creations = creations
	resp, err := req.RequestWith(t.Context(), superuser)
	require.NoError(t, err)
	require.Len(t, resp.Results, len(creations))
	for i, r := range resp.Results {
		require.NoError(t, kerr.ErrorForCode(r.ErrorCode), "create ACL %+v", creations[i])
	}

	// Every user signs in on the SCRAM listener (credentials reach the
	// broker through the metadata log, a moment after they are made).
	names := slices.Sorted(maps.Keys(users))
	as := map[string]kafkabus.Config{}
	for _, name := range names {
		pw := filepath.Join(t.TempDir(), "password")
		require.NoError(t, os.WriteFile(pw, passwords[name], 0o600))
		as[name] = kafkabus.Config{Brokers: []string{kc.SCRAMBootstrap()}, ClientID: "acl-test",
			SASLMechanism: kafkabus.SCRAMSHA512, SASLUsername: name, SASLPasswordFile: pw}
		cl := kafkaClient(t, as[name])
		waitFor(t, time.Minute, name+" signs in", func() error {
			_, err := kadm.NewClient(cl).BrokerMetadata(t.Context())
			return err
		})
	}
	wrong := as[names[0]]
	wrong.SASLPasswordFile = filepath.Join(t.TempDir(), "wrong")
	require.NoError(t, os.WriteFile(wrong.SASLPasswordFile, []byte("not-the-password"), 0o600))
	_, err = kadm.NewClient(kafkaClient(t, wrong)).BrokerMetadata(t.Context())
	require.ErrorIs(t, err, kerr.SaslAuthenticationFailed, "a wrong password")

	// The chart as Strimzi's users and Secrets would have it, over plain
	// SASL: TLS changes nothing the authorizer decides.
	ns := newNamespace(t)
	_, objs := render(t, ns, fmt.Sprintf(`
kafka: {bootstrap: %q, tls: {enabled: false}, sasl: {mechanism: SCRAM-SHA-512}}
operator: {replicas: 1, defaultReplicationFactor: 1}
gateway: {autoscaling: {enabled: false}, replicas: 1}
history: {shards: 1, copies: 1}
presence: {replicas: 1, topics: {partitions: 2, replicationFactor: 1}}
`, kc.SCRAMBootstrap()))
	strimziSecrets := map[string]map[string][]byte{}
	for name, pw := range passwords {
		strimziSecrets[name] = map[string][]byte{"password": pw}
	}
	procs := runChart(t, bins, ns, objs, strimziSecrets)
	component := map[string]string{} // KafkaUser -> a process running as it
	for name, p := range procs {
		user := p.env["PALAVER_KAFKA_SASL_USERNAME"]
		require.Contains(t, users, user, "%s runs as a KafkaUser of k8s/kafka", name)
		require.Equal(t, kafkabus.SCRAMSHA512, p.env["PALAVER_KAFKA_SASL_MECHANISM"], name)
		component[user] = name
		p.waitLive(t)
	}
	require.Len(t, component, len(users), "every KafkaUser is some component's")

	cr := chatThroughChart(t, bins, ns, procs, renderedSecrets(t, objs))
	topic := cr.Status.TopicName
	require.True(t, strings.HasPrefix(topic, room.TopicPrefix), topic)

	// A presence replica that takes partitions over reads their states back
	// (on the first start the state topic was empty): a new pod replaces
	// the one that counted the load's members.
	procs["presence"] = procs["presence"].restart(t)
	procs["presence"].waitReady(t, true)
	partitions, err := strconv.Atoi(procs["presence"].env["PALAVER_PRESENCE_PARTITIONS"])
	require.NoError(t, err)
	waitFor(t, time.Minute, "the new presence replica takes every partition over", func() error {
		if n := procs["presence"].logged("presence: partition taken over"); n < partitions {
			return fmt.Errorf("%d of %d partitions", n, partitions)
		}
		return nil
	})

	// The operator grows the room, changes its retention, and deletes it.
	cr.Spec.Partitions = 2
	cr.Spec.Retention.Time = "48h"
	cr.Spec.DeletionPolicy = chatv1alpha1.DeletionPolicyDelete
	require.NoError(t, k8sClient.Update(t.Context(), cr))
	superadm := kadm.NewClient(superuser)
	waitFor(t, 2*time.Minute, "the operator grows and reconfigures "+topic, func() error {
		td, err := superadm.ListTopics(t.Context(), topic)
		if err != nil {
			return err
		}
		if n := len(td[topic].Partitions); n != 2 {
			return fmt.Errorf("%d partitions", n)
		}
		rc, err := superadm.DescribeTopicConfigs(t.Context(), topic)
		if err != nil {
			return err
		}
		c, err := rc.On(topic, nil)
		if err != nil {
			return err
		}
		for _, kv := range c.Configs {
			if kv.Key == "retention.ms" && kv.MaybeValue() == "172800000" {
				return nil
			}
		}
		return errors.New("retention.ms not 48h yet")
	})

	// Replica reassignment and its throttle, through the operator's own
	// provisioning code as its user: one broker leaves nothing to move, so
	// the reassignment names the replicas the partitions have.
	opUser := procs["operator"].env["PALAVER_KAFKA_SASL_USERNAME"]
	prov := room.NewProvisioner(kafkaClient(t, as[opUser]))
	moved, err := prov.Reassign(t.Context(), map[string]map[int32][]int32{topic: {0: {0}, 1: {0}}})
	require.NoError(t, err)
	require.NoError(t, moved[topic], "reassign %s as %s", topic, opUser)
	_, err = prov.Reassignments(t.Context())
	require.NoError(t, err, "list reassignments as %s", opUser)
	_, err = prov.ReplicaBytes(t.Context(), map[string][]int32{topic: {0, 1}})
	require.NoError(t, err, "replica sizes as %s", opUser)
	require.NoError(t, prov.SetThrottleRate(t.Context(), []int32{0}, 10<<20), "throttle as %s", opUser)
	require.NoError(t, prov.SetThrottleRate(t.Context(), []int32{0}, 0), "unthrottle as %s", opUser)

	// What each user must not do. The authorizer's log of what these
	// attempts were allowed on the way (metadata, say) does not count as
	// the components' use.
	authLog := filepath.Join(kc.Dir(), "node-0", kafkatest.AuthorizerLog)
	tryFrom := fileSize(t, authLog)
	group := procs["presence"].env["PALAVER_PRESENCE_GROUP"]
	require.NotEmpty(t, group)
	gwUser := procs["gateway"].env["PALAVER_KAFKA_SASL_USERNAME"]
	hiUser := procs["palaver-history-0"].env["PALAVER_KAFKA_SASL_USERNAME"]
	prUser := procs["presence"].env["PALAVER_KAFKA_SASL_USERNAME"]
	intruder := room.TopicPrefix + ns + ".intruder"
	for _, c := range []struct {
		user, what string
		do         func(kafkabus.Config) error
		want       error
	}{
		{gwUser, "create a room topic", createTopic(intruder), kerr.TopicAuthorizationFailed},
		{gwUser, "delete a room topic", deleteTopic(topic), kerr.TopicAuthorizationFailed},
		{gwUser, "change a room topic's configs", alterConfigs(topic), kerr.TopicAuthorizationFailed},
		{gwUser, "write the registry", produce(room.RegistryTopic), kafka.TopicAuthorizationFailed},
		{gwUser, "write presence state", produce(presenceState), kafka.TopicAuthorizationFailed},
		{gwUser, "read presence events", fetch(presenceEvents), kafka.TopicAuthorizationFailed},
		{gwUser, "read presence's consumer group", groupOffsets(group), kerr.GroupAuthorizationFailed},
		{gwUser, "throttle replication", throttle, kerr.ClusterAuthorizationFailed},
		{hiUser, "write a room", produce(topic), kafka.TopicAuthorizationFailed},
		{hiUser, "write the registry", produce(room.RegistryTopic), kafka.TopicAuthorizationFailed},
		{hiUser, "create a room topic", createTopic(intruder), kerr.TopicAuthorizationFailed},
		{hiUser, "delete a room topic", deleteTopic(topic), kerr.TopicAuthorizationFailed},
		{hiUser, "change a room topic's configs", alterConfigs(topic), kerr.TopicAuthorizationFailed},
		{hiUser, "read presence state", fetch(presenceState), kafka.TopicAuthorizationFailed},
		{hiUser, "read presence's consumer group", groupOffsets(group), kerr.GroupAuthorizationFailed},
		{prUser, "read a room", fetch(topic), kafka.TopicAuthorizationFailed},
		{prUser, "write a room", produce(topic), kafka.TopicAuthorizationFailed},
		{prUser, "write the registry", produce(room.RegistryTopic), kafka.TopicAuthorizationFailed},
		{prUser, "delete its events topic", deleteTopic(presenceEvents), kerr.TopicAuthorizationFailed},
		{prUser, "change its state topic's configs", alterConfigs(presenceState), kerr.TopicAuthorizationFailed},
		{prUser, "write its events topic", produce(presenceEvents), kafka.TopicAuthorizationFailed},
		{prUser, "read another consumer group", groupOffsets(group + "-other"), kerr.GroupAuthorizationFailed},
		{opUser, "read a room", fetch(topic), kafka.TopicAuthorizationFailed},
		{opUser, "write a room", produce(topic), kafka.TopicAuthorizationFailed},
		{opUser, "read presence's consumer group", groupOffsets(group), kerr.GroupAuthorizationFailed},
		{opUser, "write presence events", produce(presenceEvents), kafka.TopicAuthorizationFailed},
		{opUser, "create a topic outside the rooms", createTopic("palaver.other"), kerr.TopicAuthorizationFailed},
		{opUser, "delete the registry", deleteTopic(room.RegistryTopic), kerr.TopicAuthorizationFailed},
		{opUser, "change the registry's configs", alterConfigs(room.RegistryTopic), kerr.TopicAuthorizationFailed},
	} {
		err := c.do(as[c.user])
		require.ErrorIs(t, err, c.want, "%s must not %s", c.user, c.what)
	}
	tryTo := fileSize(t, authLog)

	// Deleting the ChatRoom deletes the topic (and the registry entry).
	require.NoError(t, k8sClient.Delete(t.Context(), cr))
	waitFor(t, 2*time.Minute, "the operator deletes "+topic, func() error {
		td, err := superadm.ListTopics(t.Context(), topic)
		if err != nil {
			return err
		}
		if td.Has(topic) {
			return errors.New("still there")
		}
		if err := k8sClient.Get(t.Context(), client.ObjectKeyFromObject(cr), cr); err == nil {
			return errors.New("the ChatRoom is still there")
		}
		return nil
	})

	// And no KafkaUser has an ACL that nothing used: each one allowed some
	// action above (the authorizer logs the ACL behind every action it
	// allows), or grants nothing besides another of the user's ACLs on the
	// same resource (Describe beside Read, Write, Delete or Alter;
	// DescribeConfigs beside AlterConfigs).
	used := usedACLs(t, authLog, tryFrom, tryTo)
	declared := map[aclKey]bool{}
	for _, c := range creations {
		declared[keyOf(c)] = true
	}
	for _, c := range creations {
		k := keyOf(c)
		if used[k] {
			continue
		}
		implied := slices.ContainsFunc(impliedBy[c.Operation], func(op kmsg.ACLOperation) bool {
			by := k
			by.op = op.String()
			return declared[by]
		})
		require.True(t, implied, "%s allows %s on %s %s (%s), which no component did", k.principal, k.op, k.typ, k.name, k.pattern)
	}
}

// impliedBy lists, for an operation, the operations whose ACL allows it
// too (Kafka's authorizer).
var impliedBy = map[kmsg.ACLOperation][]kmsg.ACLOperation{
	kmsg.ACLOperationDescribe:        {kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationDelete, kmsg.ACLOperationAlter},
	kmsg.ACLOperationDescribeConfigs: {kmsg.ACLOperationAlterConfigs},
}

// aclKey names an allowing ACL as the authorizer's log spells it.
type aclKey struct{ principal, typ, name, pattern, op string }

func keyOf(c kmsg.CreateACLsRequestCreation) aclKey {
	return aclKey{principal: c.Principal, typ: c.ResourceType.String(), name: c.ResourceName,
		pattern: c.ResourcePatternType.String(), op: c.Operation.String()}
}

// matchingACL is how the StandardAuthorizer's audit log names the ACL that
// allowed an action.
var matchingACL = regexp.MustCompile(`is Allowed .* based on rule MatchingAcl\(acl=StandardAcl\[resourceType=(\w+), resourceName=([^,]*), patternType=(\w+), principal=([^,]+), host=[^,]+, operation=(\w+), permissionType=ALLOW\]\)`)

// usedACLs reads the ACLs that allowed some action from a node's
// authorizer log, except in the bytes from skipFrom to skipTo.
func usedACLs(t *testing.T, path string, skipFrom, skipTo int64) map[aclKey]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.LessOrEqual(t, skipTo, int64(len(b)))
	used := map[aclKey]bool{}
	for _, part := range [][]byte{b[:skipFrom], b[skipTo:]} {
		for _, m := range matchingACL.FindAllSubmatch(part, -1) {
			used[aclKey{principal: string(m[4]), typ: string(m[1]), name: string(m[2]), pattern: string(m[3]), op: string(m[5])}] = true
		}
	}
	require.NotEmpty(t, used, "no allowed action in %s", path)
	return used
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Size()
}

// kafkaUserSpec is the part of a Strimzi KafkaUser (kafka.strimzi.io/v1)
// that says who it is and what it may do; a field the test does not map
// fails the decoding.
type kafkaUserSpec struct {
	Authentication struct {
		Type string `json:"type"`
	} `json:"authentication"`
	Authorization struct {
		Type string       `json:"type"`
		ACLs []strimziACL `json:"acls"`
	} `json:"authorization"`
}

type strimziACL struct {
	Resource struct {
		Type        string `json:"type"`
		Name        string `json:"name"`
		PatternType string `json:"patternType"`
	} `json:"resource"`
	Type       string   `json:"type"`
	Host       string   `json:"host"`
	Operations []string `json:"operations"`
}

// kafkaUsers reads the KafkaUsers of k8s/kafka, by name.
func kafkaUsers(t *testing.T) map[string]kafkaUserSpec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "k8s", "kafka", "users.yaml"))
	require.NoError(t, err)
	users := map[string]kafkaUserSpec{}
	for _, o := range kinds(decodeObjects(t, string(b)), "KafkaUser") {
		require.Equal(t, "kafka.strimzi.io/v1", o.GetAPIVersion(), o.GetName())
		raw, err := json.Marshal(o.Object["spec"])
		require.NoError(t, err)
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var spec kafkaUserSpec
		require.NoError(t, dec.Decode(&spec), "KafkaUser %s", o.GetName())
		users[o.GetName()] = spec
	}
	require.NotEmpty(t, users)
	return users
}

// Strimzi's names for ACL resource types and operations, and Kafka's.
var (
	strimziResourceTypes = map[string]kmsg.ACLResourceType{
		"topic":           kmsg.ACLResourceTypeTopic,
		"group":           kmsg.ACLResourceTypeGroup,
		"cluster":         kmsg.ACLResourceTypeCluster,
		"transactionalId": kmsg.ACLResourceTypeTransactionalId,
	}
	strimziOperations = map[string]kmsg.ACLOperation{
		"All":             kmsg.ACLOperationAll,
		"Read":            kmsg.ACLOperationRead,
		"Write":           kmsg.ACLOperationWrite,
		"Create":          kmsg.ACLOperationCreate,
		"Delete":          kmsg.ACLOperationDelete,
		"Alter":           kmsg.ACLOperationAlter,
		"Describe":        kmsg.ACLOperationDescribe,
		"ClusterAction":   kmsg.ACLOperationClusterAction,
		"DescribeConfigs": kmsg.ACLOperationDescribeConfigs,
		"AlterConfigs":    kmsg.ACLOperationAlterConfigs,
		"IdempotentWrite": kmsg.ACLOperationIdempotentWrite,
	}
)

// kafkaACLs maps a KafkaUser's simple authorization to the ACLs Strimzi's
// User Operator creates: principal User:<name>, one ACL per operation,
// host "*" and pattern literal unless given, and the cluster resource
// named kafka-cluster.
func kafkaACLs(t *testing.T, name string, spec kafkaUserSpec) []kmsg.CreateACLsRequestCreation {
	t.Helper()
	require.Equal(t, "simple", spec.Authorization.Type, "KafkaUser %s authorization", name)
	var out []kmsg.CreateACLsRequestCreation
	for _, a := range spec.Authorization.ACLs {
		c := kmsg.NewCreateACLsRequestCreation()
		c.Principal = "User:" + name
		var ok bool
		c.ResourceType, ok = strimziResourceTypes[a.Resource.Type]
		require.True(t, ok, "KafkaUser %s: resource type %q", name, a.Resource.Type)
		c.ResourceName = a.Resource.Name
		if c.ResourceType == kmsg.ACLResourceTypeCluster {
			c.ResourceName = "kafka-cluster"
		}
		switch a.Resource.PatternType {
		case "", "literal":
			c.ResourcePatternType = kmsg.ACLResourcePatternTypeLiteral
		case "prefix":
			c.ResourcePatternType = kmsg.ACLResourcePatternTypePrefixed
		default:
			t.Fatalf("KafkaUser %s: patternType %q", name, a.Resource.PatternType)
		}
		switch a.Type {
		case "", "allow":
			c.PermissionType = kmsg.ACLPermissionTypeAllow
		case "deny":
			c.PermissionType = kmsg.ACLPermissionTypeDeny
		default:
			t.Fatalf("KafkaUser %s: ACL type %q", name, a.Type)
		}
		c.Host = cmp.Or(a.Host, "*")
		require.NotEmpty(t, a.Operations, "KafkaUser %s: an ACL without operations", name)
		for _, op := range a.Operations {
			c.Operation, ok = strimziOperations[op]
			require.True(t, ok, "KafkaUser %s: operation %q", name, op)
			out = append(out, c)
		}
	}
	return out
}

// startKafka starts a broker for one test and stops it when the test ends
// (keeping its directory if the test failed).
func startKafka(t *testing.T, opts kafkatest.Options) *kafkatest.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	kc, err := kafkatest.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := kc.Stop(); err != nil {
			t.Errorf("stop Kafka: %v", err)
		}
		if t.Failed() {
			t.Logf("Kafka's logs are in %s", kc.Dir())
			return
		}
		_ = os.RemoveAll(kc.Dir())
	})
	return kc
}

// kafkaClient returns a franz-go client made as the components make
// theirs, closed when the test ends.
func kafkaClient(t *testing.T, cfg kafkabus.Config) *kgo.Client {
	t.Helper()
	cl, err := cfg.AdminClient()
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// The things a user tries in TestKafkaUsersAllowWhatEachComponentDoes,
// each as a client of the components' kind would do it: kafka-go for
// records, franz-go for administration.

func withClient(cfg kafkabus.Config, do func(context.Context, *kadm.Client) error) error {
	cl, err := cfg.AdminClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return do(ctx, kadm.NewClient(cl))
}

func createTopic(topic string) func(kafkabus.Config) error {
	return func(cfg kafkabus.Config) error {
		return withClient(cfg, func(ctx context.Context, adm *kadm.Client) error {
			r, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
			return cmp.Or(err, r.Err)
		})
	}
}

func deleteTopic(topic string) func(kafkabus.Config) error {
	return func(cfg kafkabus.Config) error {
		return withClient(cfg, func(ctx context.Context, adm *kadm.Client) error {
			r, err := adm.DeleteTopic(ctx, topic)
			return cmp.Or(err, r.Err)
		})
	}
}

func alterConfigs(topic string) func(kafkabus.Config) error {
	return func(cfg kafkabus.Config) error {
		return withClient(cfg, func(ctx context.Context, adm *kadm.Client) error {
			rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kmsg.StringPtr("60000")}}, topic)
			if err != nil {
				return err
			}
			r, err := rs.On(topic, nil)
			return cmp.Or(err, r.Err)
		})
	}
}

func groupOffsets(group string) func(kafkabus.Config) error {
	return func(cfg kafkabus.Config) error {
		return withClient(cfg, func(ctx context.Context, adm *kadm.Client) error {
			_, err := adm.FetchOffsets(ctx, group)
			return err
		})
	}
}

func throttle(cfg kafkabus.Config) error {
	cl, err := cfg.AdminClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return room.NewProvisioner(cl).SetThrottleRate(ctx, []int32{0}, 10<<20)
}

func produce(topic string) func(kafkabus.Config) error {
	return func(cfg kafkabus.Config) error {
		conn, err := dialLeader(cfg, topic)
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.WriteMessages(kafka.Message{Key: []byte("acl-test"), Value: []byte("must not land")})
		return err
	}
}

func fetch(topic string) func(kafkabus.Config) error {
	return func(cfg kafkabus.Config) error {
		conn, err := dialLeader(cfg, topic)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.Seek(0, kafka.SeekStart|kafka.SeekDontCheck); err != nil {
			return err
		}
		b := conn.ReadBatch(1, 1<<20)
		_, err = b.ReadMessage()
		return errors.Join(err, b.Close())
	}
}

// dialLeader connects to the leader of the topic's partition 0.
func dialLeader(cfg kafkabus.Config, topic string) (*kafka.Conn, error) {
	d, err := cfg.Dialer()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := d.DialLeader(ctx, "tcp", cfg.Brokers[0], topic, 0)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return conn, nil
}
