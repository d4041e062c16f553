"""Friendly aliases → full prefixed backbone names."""

ALIASES: dict[str, str] = {
    # DINOv2 (Oquab et al. 2023) and with registers (Darcet et al. 2024)
    "dinov2-s": "timm:vit_small_patch14_dinov2.lvd142m",
    "dinov2-b": "timm:vit_base_patch14_dinov2.lvd142m",
    "dinov2-l": "timm:vit_large_patch14_dinov2.lvd142m",
    "dinov2-g": "timm:vit_giant_patch14_dinov2.lvd142m",
    "dinov2-s-reg": "timm:vit_small_patch14_reg4_dinov2.lvd142m",
    "dinov2-b-reg": "timm:vit_base_patch14_reg4_dinov2.lvd142m",
    "dinov2-l-reg": "timm:vit_large_patch14_reg4_dinov2.lvd142m",
    "dinov2-g-reg": "timm:vit_giant_patch14_reg4_dinov2.lvd142m",
    # CLIP (OpenAI weights through OpenCLIP)
    "clip-b32": "open_clip:ViT-B-32/openai",
    "clip-b16": "open_clip:ViT-B-16/openai",
    "clip-l14": "open_clip:ViT-L-14/openai",
    # MAE (He et al. 2022), self-supervised, not fine-tuned
    "mae-b": "timm:vit_base_patch16_224.mae",
    "mae-l": "timm:vit_large_patch16_224.mae",
    "mae-h": "timm:vit_huge_patch14_224.mae",
    # supervised ViTs / DeiT
    "vit-s16": "timm:vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit-b16": "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "deit-s": "timm:deit_small_patch16_224.fb_in1k",
    "deit-b": "timm:deit_base_patch16_224.fb_in1k",
    # SigLIP (no CLS token: use --pool mean)
    "siglip-b16": "timm:vit_base_patch16_siglip_224.webli",
    # domain models (Hugging Face; some are gated: accept their licence on the Hub first)
    "phikon": "hf:owkin/phikon",          # pathology, ViT-B iBOT
    "phikon-v2": "hf:owkin/phikon-v2",    # pathology, ViT-L DINOv2
    "rad-dino": "hf:microsoft/rad-dino",  # chest X-ray, DINOv2 ViT-B
    # Inception-V3 with the FID weights (generative metrics)
    "inception": "inception:fid",
    # offline demo
    "fmnist-vit": "demo:fmnist-vit",
}
