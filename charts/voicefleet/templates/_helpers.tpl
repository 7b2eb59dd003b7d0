{{/* Names and labels shared by every template. */}}

{{- define "voicefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "voicefleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's ServiceAccount: the chart's own, or one named in serviceAccount.name. */}}
{{- define "voicefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "voicefleet.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The runtime image of pools that name none: runtimeImage, or this chart's appVersion. */}}
{{- define "voicefleet.runtimeImage" -}}
{{- default (printf "ghcr.io/voicefleet/runtime:%s" .Chart.AppVersion) .Values.runtimeImage -}}
{{- end -}}

{{- define "voicefleet.operatorName" -}}
{{- printf "%s-operator" (include "voicefleet.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "voicefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "voicefleet.labels" -}}
{{ include "voicefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "voicefleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
