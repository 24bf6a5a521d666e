"""Tiny Florence-2 and BLIP-2 checkpoints built locally (random weights, a tokenizer trained on a
few sentences), saved with ``save_pretrained`` so the code under test loads them exactly as it
would load a real checkpoint folder. No hub access."""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = [
    "an astronaut in a white suit stands in front of a flag",
    "a cat with green eyes looks at the camera",
    "a cup of coffee on a wooden table",
    "a woman wearing a red dress in a park",
    "a man with a hat standing on a street at night",
    "a watercolor painting of a harbour with boats",
    "the image shows a person smiling",
    "a dog running on the beach under a blue sky",
    "close up portrait photo with soft light",
    "a red teapot next to a plate of cookies",
    "mountains covered in snow behind a lake",
    "a bicycle leaning against a brick wall",
]
FLORENCE_EXTRA = ["<image>"] + [f"<loc_{i}>" for i in range(1000)] + [
    "<od>", "</od>", "<ocr>", "</ocr>", "<poly>", "</poly>", "<sep>"]
POST_PROCESSOR_CONFIG = {
    "ocr": {"PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
            "AREA_THRESHOLD": 0.0},
    "phrase_grounding": {"FILTER_BY_BLACK_LIST": True},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def _bpe(folder: Path, extra: list[str], roberta: bool) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if roberta:
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    if extra:
        tok.add_special_tokens(extra)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))


def build_florence(folder: Path) -> Path:
    from transformers import BartTokenizer, CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor

    _bpe(folder, FLORENCE_EXTRA, roberta=True)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BartTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>",
        "model_max_length": 1024, "extra_special_tokens": {"image_token": "<image>"}}))
    tokenizer = BartTokenizer.from_pretrained(str(folder))
    image_processor = CLIPImageProcessorPil(
        size={"height": 64, "width": 64}, do_center_crop=False, crop_size={"height": 64, "width": 64},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    image_processor.image_seq_length = (64 // 8) ** 2 + 1
    processor = Florence2Processor(image_processor, tokenizer, post_processor_config=POST_PROCESSOR_CONFIG)
    text_config = dict(
        model_type="bart", vocab_size=len(tokenizer), max_position_embeddings=256, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.bos_token_id)
    vision_config = dict(
        depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1], patch_prenorm=[False, True],
        embed_dim=[16, 32], num_heads=[1, 2], num_groups=[1, 2], window_size=4, projection_dim=32, drop_path_rate=0.0)
    config = Florence2Config(text_config=text_config, vision_config=vision_config, image_token_id=tokenizer.image_token_id)
    import torch

    torch.manual_seed(0)
    Florence2ForConditionalGeneration(config).save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def build_blip2(folder: Path) -> Path:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil, GPT2Tokenizer

    _bpe(folder, [], roberta=False)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "model_max_length": 512}))
    tokenizer = GPT2Tokenizer.from_pretrained(str(folder))
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    v = len(tokenizer)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32, max_position_embeddings=64, vocab_size=v),
        text_config=dict(model_type="opt", vocab_size=v, hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                         num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=32,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        num_query_tokens=4, image_token_index=image_token_id)
    import torch

    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder
