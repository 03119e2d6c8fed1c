"""Non-transformer students: a BiLSTM and a CNN (Kim 2014) text classifier over their own embeddings.

Both are ``transformers`` ``PreTrainedModel`` subclasses, registered with the Auto classes when this module is
imported (``import egkd`` is not enough on its own: ``egkd.models`` imports it), so a saved student loads back
with ``AutoModelForSequenceClassification.from_pretrained(folder)``. Their forward takes ``input_ids`` *or*
``inputs_embeds`` and ``get_input_embeddings()`` returns their ``nn.Embedding``, so every gradient explainer and
the student's differentiable gradient x input map work on them unchanged. They ignore ``token_type_ids``:
sentence pairs arrive as ``[CLS] a [SEP] b [SEP]`` from their tokenizer.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput


class _SmallConfig(PretrainedConfig):
    def __init__(self, vocab_size: int = 1000, embed_size: int = 300, dropout: float = 0.1,
                 pad_token_id: int = 0, **kwargs) -> None:
        self.vocab_size = vocab_size
        self.embed_size = embed_size
        self.dropout = dropout
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class BiLSTMConfig(_SmallConfig):
    """``hidden_size`` per direction; the sentence vector is the masked max over time of both directions."""

    model_type = "egkd-bilstm"

    def __init__(self, hidden_size: int = 300, num_layers: int = 1, **kwargs) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        super().__init__(**kwargs)


class CNNConfig(_SmallConfig):
    """``num_filters`` per kernel size (Kim 2014: 100 each of widths 3, 4, 5), max-over-time pooling."""

    model_type = "egkd-cnn"

    def __init__(self, num_filters: int = 100, kernel_sizes: list[int] | tuple[int, ...] = (3, 4, 5),
                 **kwargs) -> None:
        self.num_filters = num_filters
        self.kernel_sizes = list(kernel_sizes)
        super().__init__(**kwargs)


class _SmallForSequenceClassification(PreTrainedModel):
    base_model_prefix = "egkd_small"
    main_input_name = "input_ids"
    _no_split_modules: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def _embed(self, input_ids: Tensor | None, inputs_embeds: Tensor | None,
               attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        mask = attention_mask.to(inputs_embeds.dtype).unsqueeze(-1)
        return inputs_embeds * mask, attention_mask

    def _output(self, features: Tensor, labels: Tensor | None) -> SequenceClassifierOutput:
        logits = self.classifier(self.dropout(features))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.view(-1), labels.float().view(-1))
            else:
                loss = F.cross_entropy(logits, labels.long().view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _masked_max(h: Tensor, valid: Tensor) -> Tensor:
    """Max over time of ``h [B, T, D]`` on ``valid [B, T]`` positions (0 for an example without any)."""
    neg = torch.finfo(h.dtype).min
    out = h.masked_fill(~valid.unsqueeze(-1), neg).max(1).values
    return torch.where(valid.any(1, keepdim=True), out, torch.zeros_like(out))


class BiLSTMForSequenceClassification(_SmallForSequenceClassification):
    """Embedding -> bidirectional LSTM (packed: padding never enters a state) -> masked max-pool -> linear."""

    config_class = BiLSTMConfig

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embed_size, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embed_size, config.hidden_size, num_layers=config.num_layers,
                            batch_first=True, bidirectional=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None,
                **kwargs) -> SequenceClassifierOutput:
        x, attention_mask = self._embed(input_ids, inputs_embeds, attention_mask)
        valid = attention_mask > 0
        lengths = valid.sum(1).clamp_min(1).cpu()
        # cuDNN's RNN has no double backward: the differentiable-explanation step uses the native kernels
        ctx = (torch.backends.cudnn.flags(enabled=False) if x.is_cuda and x.requires_grad
               else contextlib.nullcontext())
        with ctx:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        return self._output(_masked_max(h, pos < lengths.to(x.device).unsqueeze(1)), labels)


class CNNForSequenceClassification(_SmallForSequenceClassification):
    """Kim (2014): embedding -> one wide convolution per kernel size + ReLU -> max over time -> linear.

    Padding positions are zeroed and convolutions are *wide* (``padding = k - 1``), so every kept window
    touches a real token and an example's output does not depend on how far its batch is padded.
    """

    config_class = CNNConfig

    def __init__(self, config: CNNConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embed_size, padding_idx=config.pad_token_id)
        self.convs = nn.ModuleList(nn.Conv1d(config.embed_size, config.num_filters, k, padding=k - 1)
                                   for k in config.kernel_sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.num_filters * len(config.kernel_sizes), config.num_labels)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None,
                **kwargs) -> SequenceClassifierOutput:
        x, attention_mask = self._embed(input_ids, inputs_embeds, attention_mask)
        length = (attention_mask > 0).long().sum(1).clamp_min(1)  # right padding (the collator's)
        xt = x.transpose(1, 2)
        pooled = []
        for k, conv in zip(self.config.kernel_sizes, self.convs, strict=True):
            h = F.relu(conv(xt)).transpose(1, 2)  # [B, T + k - 1, F]; window t covers tokens t-k+1..t
            pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
            pooled.append(_masked_max(h, pos < (length + k - 1).unsqueeze(1)))
        return self._output(torch.cat(pooled, -1), labels)


AutoConfig.register(BiLSTMConfig.model_type, BiLSTMConfig, exist_ok=True)
AutoConfig.register(CNNConfig.model_type, CNNConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)
AutoModelForSequenceClassification.register(CNNConfig, CNNForSequenceClassification, exist_ok=True)
