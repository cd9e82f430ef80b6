"""Tiny random Llama 3 / Qwen2 / Qwen3 model directories, built locally with `transformers`.

Nothing can be downloaded in tests, so each directory gets a byte-level BPE tokenizer trained
on a few sentences and a chat template written here in the style of its family.
"""

import json
import os

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SENTENCES = [
  'The cheese shop sells cheddar, brie and gouda at fair prices.',
  'Helpful assistants answer questions honestly and explain their reasons.',
  'A model spec describes values, rules and the reasons behind them.',
  'Which cheese is cheaper: the local one or the imported one?',
  'Café crème brûlée — naïve façade, 42 apples & 7 pears!',
]

# A Llama 3 style template: bos, role headers, <|eot_id|> closing every turn.
LLAMA3_TEMPLATE = (
  '{{- bos_token }}'
  '{%- for message in messages %}'
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
  "{{- message['content'] | trim + '<|eot_id|>' }}"
  '{%- endfor %}'
  '{%- if add_generation_prompt %}'
  "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
  '{%- endif %}'
)

# ChatML as in Qwen2.5: a default system turn, then <|im_start|>role\n...<|im_end|>\n.
CHATML_TEMPLATE = (
  "{%- if messages and messages[0]['role'] != 'system' %}"
  "{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
  '{%- endif %}'
  '{%- for message in messages %}'
  "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
  '{%- endfor %}'
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# ChatML with {% generation %} markers around what the assistant writes (Qwen3-like).
CHATML_GENERATION_TEMPLATE = (
  '{%- for message in messages %}'
  "{%- if message.role == 'assistant' %}"
  "{{- '<|im_start|>assistant\n' }}"
  "{%- generation %}{{- message.content + '<|im_end|>' }}{%- endgeneration %}"
  "{{- '\n' }}"
  '{%- else %}'
  "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
  '{%- endif %}'
  '{%- endfor %}'
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

LLAMA_SPECIALS = [
  '<|begin_of_text|>',
  '<|end_of_text|>',
  '<|start_header_id|>',
  '<|end_header_id|>',
  '<|eot_id|>',
]
CHATML_SPECIALS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']

TINY = dict(
  vocab_size=320,
  hidden_size=64,
  intermediate_size=128,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  rms_norm_eps=1e-6,
)
FAMILIES = {
  # Llama 3: untied lm_head, Llama 3 RoPE base; saved in several shards.
  'llama': dict(
    config=transformers.LlamaConfig,
    model=transformers.LlamaForCausalLM,
    hf=dict(tie_word_embeddings=False, rope_theta=500_000.0, rms_norm_eps=1e-5),
    template=LLAMA3_TEMPLATE,
    specials=LLAMA_SPECIALS,
    bos='<|begin_of_text|>',
    eos='<|eot_id|>',
    shard='40KB',
  ),
  # Qwen2.5 small models: tied embeddings, q/k/v biases.
  'qwen2': dict(
    config=transformers.Qwen2Config,
    model=transformers.Qwen2ForCausalLM,
    hf=dict(tie_word_embeddings=True, rope_theta=1_000_000.0),
    template=CHATML_TEMPLATE,
    specials=CHATML_SPECIALS,
    bos=None,
    eos='<|im_end|>',
    shard=None,
  ),
  # Qwen3: q/k norms and a head_dim (32) that is not hidden_size / heads (16).
  'qwen3': dict(
    config=transformers.Qwen3Config,
    model=transformers.Qwen3ForCausalLM,
    hf=dict(tie_word_embeddings=False, rope_theta=1_000_000.0, head_dim=32),
    template=CHATML_GENERATION_TEMPLATE,
    specials=CHATML_SPECIALS,
    bos=None,
    eos='<|im_end|>',
    shard=None,
  ),
}


def build_tokenizer(specials, bos) -> Tokenizer:
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=300,
    show_progress=False,
    special_tokens=[AddedToken(s, special=True) for s in specials],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(SENTENCES, trainer)
  if bos:  # like Llama 3's tokenizer.json: plain encode() prepends bos
    tok.post_processor = processors.TemplateProcessing(
      single=f'{bos} $A', special_tokens=[(bos, tok.token_to_id(bos))]
    )
  return tok


def randomize(model, seed: int):
  """Non-trivial values everywhere (HF initialises norms to 1 and biases to 0)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1 + 0.2 * noise if 'norm' in name else 0.15 * noise)


def build(family: str, out_dir: str, seed: int = 0, **hf_overrides) -> str:
  """Writes config.json, safetensors, tokenizer.json and tokenizer_config.json to out_dir."""
  spec = FAMILIES[family]
  torch.manual_seed(seed)
  config = spec['config'](**{**TINY, **spec['hf'], **hf_overrides})
  model = spec['model'](config).eval()
  randomize(model, seed)
  kwargs = {'max_shard_size': spec['shard']} if spec['shard'] else {}
  model.save_pretrained(out_dir, **kwargs)
  build_tokenizer(spec['specials'], spec['bos']).save(os.path.join(out_dir, 'tokenizer.json'))
  with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w') as f:
    json.dump(
      {
        'tokenizer_class': 'PreTrainedTokenizerFast',
        'bos_token': spec['bos'],
        'eos_token': spec['eos'],
        'chat_template': spec['template'],
        'model_max_length': 4096,
        'clean_up_tokenization_spaces': False,
      },
      f,
      indent=2,
    )
  return out_dir


def hf_logits(model_dir: str, tokens_BT):
  """Reference logits from transformers (torch, CPU, float32, eager attention)."""
  model = transformers.AutoModelForCausalLM.from_pretrained(
    model_dir, dtype=torch.float32, attn_implementation='eager'
  ).eval()
  with torch.no_grad():
    return model(torch.as_tensor(tokens_BT, dtype=torch.long)).logits.numpy()


# Llama 3.1's 'llama3' RoPE scaling, with a short original context so that the tiny model's
# wavelengths fall on both sides of, and inside, the interpolated band.
LLAMA31_ROPE = {
  'rope_type': 'llama3',
  'rope_theta': 500_000.0,
  'factor': 8.0,
  'low_freq_factor': 1.0,
  'high_freq_factor': 4.0,
  'original_max_position_embeddings': 64,
}
