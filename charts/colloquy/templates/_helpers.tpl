{{/* Chart name. */}}
{{- define "colloquy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the controller's objects: fullnameOverride or <release>-chat-controller. */}}
{{- define "colloquy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-chat-controller" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "colloquy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "colloquy.labels" -}}
helm.sh/chart: {{ include "colloquy.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: colloquy
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the controller pods. */}}
{{- define "colloquy.selectorLabels" -}}
app.kubernetes.io/name: chat-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of the controller's objects. */}}
{{- define "colloquy.controllerLabels" -}}
{{ include "colloquy.labels" . }}
{{ include "colloquy.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "colloquy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "colloquy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest; tag defaults to appVersion. */}}
{{- define "colloquy.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "colloquy.controllerImage" -}}
{{- include "colloquy.image" (dict "image" .Values.controller.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "colloquy.chatApiImage" -}}
{{- include "colloquy.image" (dict "image" .Values.chatApi.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/* "true" when the controller takes the leader Lease. */}}
{{- define "colloquy.leaderElection" -}}
{{- if or (gt (int .Values.controller.replicas) 1) .Values.controller.leaderElection -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* Name of the metrics Service (also the Prometheus `job` label). */}}
{{- define "colloquy.metricsServiceName" -}}
{{- printf "%s-metrics" (include "colloquy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* ChatBackends can be rendered: the CRD is served by the cluster (or passed with --api-versions). */}}
{{- define "colloquy.crdServed" -}}
{{- if .Capabilities.APIVersions.Has "colloquy.dev/v1alpha1" -}}true{{- end -}}
{{- end -}}

{{/* "true" when the controller watches every namespace (controller.scope=cluster). */}}
{{- define "colloquy.clusterScope" -}}
{{- if eq .Values.controller.scope "cluster" -}}true{{- end -}}
{{- end -}}

{{/* The namespaces the controller watches with controller.scope=namespaces, comma-separated and
sorted: controller.watchNamespaces, the legacy controller.watchNamespace, the namespaces of
chatBackends, and the release namespace. */}}
{{- define "colloquy.watchNamespaces" -}}
{{- $list := list .Release.Namespace -}}
{{- range .Values.controller.watchNamespaces -}}{{- $list = append $list . -}}{{- end -}}
{{- with .Values.controller.watchNamespace -}}{{- $list = append $list . -}}{{- end -}}
{{- range .Values.chatBackends -}}{{- $list = append $list (default $.Release.Namespace .namespace) -}}{{- end -}}
{{- $list | uniq | sortAlpha | join "," -}}
{{- end -}}
