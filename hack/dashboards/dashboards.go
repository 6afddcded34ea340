package main

import "fmt"

// ds is every query's data source: the dashboard's datasource variable,
// so the dashboards work with whatever Prometheus Grafana has.
var ds = &Datasource{Type: "prometheus", UID: "${datasource}"}

// builder lays panels out left to right in rows of 24 columns.
type builder struct {
	panels []Panel
	x, y   int
	rowH   int
	nextID int
}

func (b *builder) row(title string) {
	if b.x > 0 {
		b.y += b.rowH
		b.x, b.rowH = 0, 0
	}
	b.nextID++
	collapsed := false
	b.panels = append(b.panels, Panel{ID: b.nextID, Type: "row", Title: title,
		GridPos: GridPos{H: 1, W: 24, X: 0, Y: b.y}, Collapsed: &collapsed})
	b.y++
}

func (b *builder) add(w, h int, p Panel) {
	if b.x+w > 24 {
		b.y += b.rowH
		b.x, b.rowH = 0, 0
	}
	b.nextID++
	p.ID = b.nextID
	p.GridPos = GridPos{H: h, W: w, X: b.x, Y: b.y}
	p.Datasource = ds
	for i := range p.Targets {
		p.Targets[i].RefID = string(rune('A' + i))
		p.Targets[i].Datasource = ds
	}
	b.x += w
	b.rowH = max(b.rowH, h)
	b.panels = append(b.panels, p)
}

func q(expr, legend string) Target { return Target{Expr: expr, LegendFormat: legend} }

func timeseries(title, description, unit string, targets ...Target) Panel {
	zero := 0
	return Panel{Type: "timeseries", Title: title, Description: description, Targets: targets,
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Unit: unit, Min: &zero}, Overrides: []any{}}}
}

func stat(title, description, unit string, targets ...Target) Panel {
	return Panel{Type: "stat", Title: title, Description: description, Targets: targets,
		FieldConfig: &FieldConfig{Defaults: FieldDefaults{Unit: unit}, Overrides: []any{}},
		Options:     map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}}, "graphMode": "area"}}
}

func heatmap(title, description, expr string) Panel {
	return Panel{Type: "heatmap", Title: title, Description: description,
		Targets: []Target{{Expr: expr, LegendFormat: "{{le}}", Format: "heatmap"}},
		Options: map[string]any{
			"calculate": false,
			"yAxis":     map[string]any{"unit": "s"},
			"color":     map[string]any{"scheme": "Oranges", "mode": "scheme"},
			"cellGap":   1,
		}}
}

func dashboard(uid, title, description string, tags []string, vars []Variable, b *builder) Dashboard {
	list := []Variable{{Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus"}}
	return Dashboard{
		UID: uid, Title: title, Description: description, Tags: tags, Editable: true,
		GraphTooltip: 1, Refresh: "10s", SchemaVersion: 39,
		Time:       TimeRange{From: "now-1h", To: "now"},
		Timezone:   "browser",
		Templating: Templating{List: append(list, vars...)},
		Panels:     b.panels,
	}
}

// queryVar is a multi-value variable of a label's values.
func queryVar(name, label, metric string) Variable {
	return Variable{Name: name, Label: label, Type: "query", Datasource: ds, Refresh: 2,
		IncludeAll: true, Multi: true, AllValue: ".*",
		Query: map[string]any{"query": fmt.Sprintf("label_values(%s, %s)", metric, name), "refId": "vars"}}
}

// gw selects the Palaver series of the chosen namespaces.
const gw = `namespace=~"$namespace"`

func palaverDashboard() Dashboard {
	var b builder
	rate := func(metric, by string) string {
		return fmt.Sprintf(`sum by (%s) (rate(%s{%s}[$__rate_interval]))`, by, metric, gw)
	}
	quantile := func(qv, metric string) string {
		return fmt.Sprintf(`histogram_quantile(%s, sum by (le) (rate(%s_bucket{%s}[$__rate_interval])))`, qv, metric, gw)
	}

	b.row("Traffic")
	b.add(6, 5, stat("Messages in", "Sends stored in Kafka per second, all rooms.", "short",
		q(fmt.Sprintf(`sum(rate(palaver_gateway_messages_received_total{%s}[$__rate_interval]))`, gw), "in/s")))
	b.add(6, 5, stat("Deliveries", "Message frames written to client sockets per second, all rooms.", "short",
		q(fmt.Sprintf(`sum(rate(palaver_gateway_messages_delivered_total{%s}[$__rate_interval]))`, gw), "out/s")))
	b.add(6, 5, stat("Connections", "Open WebSocket connections, all gateways.", "short",
		q(fmt.Sprintf(`sum(palaver_gateway_connections{%s})`, gw), "connections")))
	b.add(6, 5, stat("Delivery p99", "99th percentile of record timestamp to socket write, live messages.", "s",
		q(quantile("0.99", "palaver_gateway_delivery_latency_seconds"), "p99")))
	b.add(12, 8, timeseries("Messages in per room", "Sends stored in Kafka (duplicates excluded), per second.", "short",
		q(rate("palaver_gateway_messages_received_total", "room"), "{{room}}")))
	b.add(12, 8, timeseries("Messages out per room", "Deliveries to client sockets per second: messages in times the room's members.", "short",
		q(rate("palaver_gateway_messages_delivered_total", "room"), "{{room}}")))

	b.row("Latency")
	b.add(12, 9, heatmap("End-to-end latency", "Time from the broker's timestamp of a message to its frame being written to a member's socket.",
		fmt.Sprintf(`sum by (le) (rate(palaver_gateway_delivery_latency_seconds_bucket{%s}[$__rate_interval]))`, gw)))
	b.add(12, 9, timeseries("Latency percentiles", "Delivery: broker timestamp to socket write. Produce: send accepted to Kafka's acknowledgement (acks=all).", "s",
		q(quantile("0.5", "palaver_gateway_delivery_latency_seconds"), "delivery p50"),
		q(quantile("0.95", "palaver_gateway_delivery_latency_seconds"), "delivery p95"),
		q(quantile("0.99", "palaver_gateway_delivery_latency_seconds"), "delivery p99"),
		q(quantile("0.99", "palaver_gateway_produce_latency_seconds"), "produce p99")))

	b.row("Connections")
	b.add(8, 8, timeseries("Connections per gateway", "Open WebSocket connections.", "short",
		q(fmt.Sprintf(`sum by (pod) (palaver_gateway_connections{%s})`, gw), "{{pod}}")))
	b.add(8, 8, timeseries("Slow and rate-limited disconnects", "Connections closed because their queue overflowed (4408) or they sent too fast, per second.", "short",
		q(fmt.Sprintf(`sum by (reason) (rate(palaver_gateway_disconnects_total{%s, reason=~"slow_consumer|rate_limited"}[$__rate_interval]))`, gw), "{{reason}}")))
	b.add(8, 8, timeseries("Disconnects by reason", "Every closed connection, per second.", "short",
		q(rate("palaver_gateway_disconnects_total", "reason"), "{{reason}}")))
	b.add(8, 8, timeseries("Rejected commands", "Client commands answered with an error, by code, per second.", "short",
		q(rate("palaver_gateway_rejected_frames_total", "reason"), "{{reason}}")))
	b.add(8, 8, timeseries("Reconnect recoveries", "Joins with a cursor, by where the missed messages came from, per second.", "short",
		q(rate("palaver_gateway_recoveries_total", "source"), "{{source}}")))
	b.add(8, 8, timeseries("Rooms tailed", "Rooms each gateway reads because they have local members.", "short",
		q(fmt.Sprintf(`sum by (pod) (palaver_gateway_rooms_tailed{%s})`, gw), "{{pod}}")))

	b.row("Operator")
	b.add(8, 8, timeseries("Reconciles", "ChatRoom reconciles per second, by result.", "short",
		q(`sum by (result) (rate(controller_runtime_reconcile_total{controller="chatroom", namespace=~"$namespace"}[$__rate_interval]))`, "{{result}}")))
	b.add(8, 8, timeseries("Rooms by condition", "ChatRooms by Ready condition and reason (operator/docs: Status).", "short",
		q(`sum by (status, reason) (palaver_operator_rooms{condition="Ready", namespace=~"$namespace"})`, "Ready={{status}} {{reason}}")))
	b.add(8, 8, timeseries("Kafka admin requests, p99", "Batched Kafka admin requests of the operator, by operation.", "s",
		q(`histogram_quantile(0.99, sum by (le, op) (rate(palaver_operator_kafka_request_duration_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])))`, "{{op}}")))
	b.add(8, 6, timeseries("Kafka reachable", "1 when the leader's last refresh of its view of Kafka succeeded.", "short",
		q(`max(palaver_operator_kafka_up{namespace=~"$namespace"})`, "up")))
	b.add(8, 6, timeseries("Topic drift", "Changes made to room topics outside the operator, per second: corrected or reported.", "short",
		q(`sum by (action) (rate(palaver_operator_topic_drift_total{namespace=~"$namespace"}[$__rate_interval]))`, "{{action}}")))
	b.add(8, 6, timeseries("Reconcile errors", "Reconciles that returned an error, per second.", "short",
		q(`sum(rate(controller_runtime_reconcile_errors_total{controller="chatroom", namespace=~"$namespace"}[$__rate_interval]))`, "errors")))

	b.row("History")
	b.add(8, 8, timeseries("Messages stored per room", "Messages history stored per second (replays and skipped records excluded), one copy per shard replica.", "short",
		q(fmt.Sprintf(`sum by (room) (rate(palaver_history_ingested_messages_total{%s}[$__rate_interval]))`, gw), "{{room}}")))
	b.add(8, 8, timeseries("Lag per room partition", "Records of a room partition not yet stored, at the replica furthest behind.", "short",
		q(fmt.Sprintf(`max by (room, partition) (palaver_history_lag_messages{%s})`, gw), "{{room}}/{{partition}}")))
	b.add(8, 8, timeseries("Rebuild remaining", "Records each replica still has to store before it first caught up (0 once it has).", "short",
		q(fmt.Sprintf(`sum by (pod) (palaver_history_rebuild_remaining_messages{%s})`, gw), "{{pod}}")))
	b.add(8, 8, timeseries("Query latency, p99", "Scroll-back (before, after, around) and search, waits for read-your-writes included.", "s",
		q(fmt.Sprintf(`histogram_quantile(0.99, sum by (le, kind) (rate(palaver_history_query_duration_seconds_bucket{%s}[$__rate_interval])))`, gw), "{{kind}}")))
	b.add(8, 8, timeseries("Commit latency, p99", "Time to write one batch and its positions in one transaction.", "s",
		q(quantile("0.99", "palaver_history_commit_duration_seconds"), "p99")))
	b.add(8, 8, timeseries("Store size", "The store on disk (database and write-ahead log) per replica: keep it under its volume's size.", "bytes",
		q(fmt.Sprintf(`sum by (pod) (palaver_history_store_bytes{%s})`, gw), "{{pod}}")))
	b.add(8, 8, timeseries("Write-ahead log restarts", "Logs a store's writer started again from their beginning per second: while idle, or at its bound (a writer that seldom idles; the batch after it waits for the log's copy).", "short",
		q(fmt.Sprintf(`sum by (pod, at) (rate(palaver_history_wal_restarts_total{%s}[$__rate_interval]))`, gw), "{{pod}} {{at}}")))

	b.row("Presence")
	b.add(8, 8, timeseries("Online users per room", "Users with at least one connection, on the presence replica owning the room.", "short",
		q(fmt.Sprintf(`max by (room) (palaver_presence_online_users{%s})`, gw), "{{room}}")))
	b.add(8, 8, timeseries("Connections per room", "Connections presence counts per room (a user's tabs and gateways each count).", "short",
		q(fmt.Sprintf(`max by (room) (palaver_presence_connections{%s})`, gw), "{{room}}")))
	b.add(8, 8, timeseries("Presence events", "Connection events read from palaver.presence.events per second, by type.", "short",
		q(rate("palaver_presence_events_total", "type"), "{{type}}")))
	b.add(8, 8, timeseries("Expiries", "Connections and gateways expired per second because their gateway's heartbeats stopped.", "short",
		q(fmt.Sprintf(`sum(rate(palaver_presence_expired_connections_total{%s}[$__rate_interval]))`, gw), "connections"),
		q(fmt.Sprintf(`sum(rate(palaver_presence_expired_gateways_total{%s}[$__rate_interval]))`, gw), "gateways")))
	b.add(8, 8, timeseries("State publication latency", "A room's first unpublished change (its event's record time) to its state stored in palaver.presence.state.", "s",
		q(quantile("0.5", "palaver_presence_publish_latency_seconds"), "p50"),
		q(quantile("0.99", "palaver_presence_publish_latency_seconds"), "p99")))
	b.add(8, 8, timeseries("Presence frames", "Presence frames the gateways send per second, by kind, and state changes folded into a later frame.", "short",
		q(rate("palaver_gateway_presence_frames_total", "kind"), "{{kind}}"),
		q(fmt.Sprintf(`sum(rate(palaver_gateway_presence_coalesced_total{%s}[$__rate_interval]))`, gw), "coalesced")))

	return dashboard("palaver-throughput", "Palaver",
		"Messages in and out per room, end-to-end latency, connections, presence, history's ingest and queries, and the operator's rooms.",
		[]string{"palaver"}, []Variable{queryVar("namespace", "Namespace", "palaver_gateway_connections")}, &b)
}

func kafkaDashboard() Dashboard {
	var b builder
	topic := `topic=~"$topic"`
	perTopic := func(metric string) string {
		return fmt.Sprintf(`sum by (topic) (rate(%s{%s}[$__rate_interval]))`, metric, topic)
	}

	b.row("Partitions")
	b.add(6, 5, stat("Under-replicated partitions", "Partitions with fewer in-sync replicas than replicas: a broker is down or behind.", "short",
		q(`sum(kafka_server_replicamanager_underreplicatedpartitions)`, "under-replicated")))
	b.add(6, 5, stat("Under min ISR", "Partitions that refuse acks=all writes (fewer in-sync replicas than min.insync.replicas).", "short",
		q(`sum(kafka_server_replicamanager_underminisrpartitioncount)`, "under min ISR")))
	b.add(6, 5, stat("Offline partitions", "Partitions without a leader.", "short",
		q(`sum(kafka_controller_kafkacontroller_offlinepartitionscount)`, "offline")))
	b.add(6, 5, stat("Partitions", "Partitions led by each broker, summed.", "short",
		q(`sum(kafka_server_replicamanager_leadercount)`, "partitions")))

	b.row("Topics")
	b.add(12, 8, timeseries("Messages in per topic", "Records appended per second (leaders only).", "short",
		q(perTopic("kafka_server_brokertopicmetrics_messagesin_total"), "{{topic}}")))
	b.add(12, 8, timeseries("Bytes in per topic", "Bytes produced per second.", "Bps",
		q(perTopic("kafka_server_brokertopicmetrics_bytesin_total"), "{{topic}}")))
	b.add(12, 8, timeseries("Bytes out per topic", "Bytes fetched by consumers and room tails per second (replication excluded).", "Bps",
		q(perTopic("kafka_server_brokertopicmetrics_bytesout_total"), "{{topic}}")))
	b.add(12, 8, timeseries("Consumer lag", "Records behind the end of the log, per consumer group and topic (Kafka Exporter).", "short",
		q(`sum by (consumergroup, topic) (kafka_consumergroup_lag{topic=~"$topic"})`, "{{consumergroup}} {{topic}}")))

	b.row("Requests")
	b.add(12, 8, timeseries("Produce and fetch time, p99", "Total time of requests on the brokers, 99th percentile, by broker.", "ms",
		q(`max by (pod) (kafka_network_requestmetrics_totaltimems{request="Produce", quantile="0.99"})`, "produce {{pod}}"),
		q(`max by (pod) (kafka_network_requestmetrics_totaltimems{request="Fetch", quantile="0.99"})`, "fetch {{pod}}")))
	b.add(12, 8, timeseries("Log size per topic", "Bytes on disk per topic, all replicas.", "bytes",
		q(`sum by (topic) (kafka_log_log_size{topic=~"$topic"})`, "{{topic}}")))

	return dashboard("palaver-kafka", "Palaver: Kafka",
		"The Kafka side of Palaver's rooms: traffic per topic, partition health and consumer lag. Strimzi's own dashboards cover the brokers in depth.",
		[]string{"palaver", "kafka"}, []Variable{queryVar("topic", "Topic", "kafka_server_brokertopicmetrics_messagesin_total")}, &b)
}
