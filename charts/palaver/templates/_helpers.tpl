{{/* Release-scoped name: the release name, or release-chart. */}}
{{- define "palaver.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A component's name: palaver.component (dict "root" . "component" "gateway"). */}}
{{- define "palaver.component" -}}
{{- printf "%s-%s" (include "palaver.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select a component's pods. */}}
{{- define "palaver.selectorLabels" -}}
app.kubernetes.io/name: palaver
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. */}}
{{- define "palaver.labels" -}}
{{ include "palaver.selectorLabels" . }}
app.kubernetes.io/part-of: palaver
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* A component's image: palaver.image (dict "root" . "image" .Values.gateway.image). */}}
{{- define "palaver.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The Kafka settings of a component, as the PALAVER_KAFKA_* variables every
binary reads (package kafkabus): palaver.kafkaEnv (dict "root" . "user" "palaver-gateway").
*/}}
{{- define "palaver.kafkaEnv" -}}
{{- $k := .root.Values.kafka -}}
- name: PALAVER_KAFKA_BOOTSTRAP
  value: {{ $k.bootstrap | quote }}
- name: PALAVER_KAFKA_CLIENT_ID
  value: {{ .user | quote }}
{{- if $k.tls.enabled }}
- name: PALAVER_KAFKA_TLS
  value: "true"
{{- if $k.tls.caSecret.name }}
- name: PALAVER_KAFKA_TLS_CA
  value: /etc/palaver/kafka-ca/ca.crt
{{- end }}
{{- end }}
{{- if $k.sasl.mechanism }}
- name: PALAVER_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: PALAVER_KAFKA_SASL_USERNAME
  value: {{ .user | quote }}
- name: PALAVER_KAFKA_SASL_PASSWORD_FILE
  value: /etc/palaver/kafka-user/password
{{- end }}
{{- end -}}

{{/* The Kafka credential volumes of a component (Strimzi's Secrets). */}}
{{- define "palaver.kafkaVolumes" -}}
{{- $k := .root.Values.kafka -}}
{{- if and $k.tls.enabled $k.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $k.tls.caSecret.name }}
    items:
    - key: {{ $k.tls.caSecret.key }}
      path: ca.crt
{{- end }}
{{- if $k.sasl.mechanism }}
- name: kafka-user
  secret:
    secretName: {{ .user }}
    items:
    - key: password
      path: password
{{- end }}
{{- end -}}

{{- define "palaver.kafkaVolumeMounts" -}}
{{- $k := .root.Values.kafka -}}
{{- if and $k.tls.enabled $k.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/palaver/kafka-ca
  readOnly: true
{{- end }}
{{- if $k.sasl.mechanism }}
- name: kafka-user
  mountPath: /etc/palaver/kafka-user
  readOnly: true
{{- end }}
{{- end -}}

{{/* A component's volumes: its Kafka credentials and, for Tilt's live
update, the directory rebuilt binaries are synced to. */}}
{{- define "palaver.volumes" -}}
{{ include "palaver.kafkaVolumes" . }}
{{- if .root.Values.liveUpdate.enabled }}
- name: live
  emptyDir:
    sizeLimit: 256Mi
{{- end }}
{{- end -}}

{{- define "palaver.volumeMounts" -}}
{{ include "palaver.kafkaVolumeMounts" . }}
{{- if .root.Values.liveUpdate.enabled }}
- name: live
  mountPath: /live
{{- end }}
{{- end -}}

{{/* The Go runtime sized to the container: every binary gets it. */}}
{{- define "palaver.goEnv" -}}
- name: GOMAXPROCS
  valueFrom:
    resourceFieldRef:
      resource: limits.cpu
      divisor: "1"
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
      divisor: "1"
{{- end -}}

{{/* Egress rules every component needs: DNS and Kafka. */}}
{{- define "palaver.egressBase" -}}
- to:
{{- toYaml .Values.networkPolicy.dnsTo | nindent 2 }}
  ports:
  - {protocol: UDP, port: 53}
  - {protocol: TCP, port: 53}
- to:
{{- toYaml .Values.kafka.networkPolicyPeers | nindent 2 }}
  ports:
{{- range .Values.kafka.networkPolicyPorts }}
  - {protocol: TCP, port: {{ . }}}
{{- end }}
{{- end -}}
