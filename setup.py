from setuptools import find_packages, setup

setup(
    name="bar_hf",
    version="0.1.0",
    description="BAR (masked Bit AutoRegressive image generation) for diffusers and transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"bar_hf": ["data/*.json", "bundled/**/*", "evaluation/bar_fid/*.py"]},
    python_requires=">=3.11",
    # lower bounds = the versions `make test-lowest` tests (scripts/lowest_constraints.py); `make test` tests the newest
    install_requires=[
        "torch>=2.13",
        "diffusers>=0.38",
        "transformers>=5.23",
        "safetensors>=0.6,<1",
        "huggingface_hub>=1.31",
        "numpy>=1.26,<3",
        "pillow>=10,<14",
        "pyyaml>=6,<7",
    ],
    extras_require={
        "train": ["accelerate>=1.10", "datasets>=4.0", "evaluate>=0.4.5"],
        "lora": ["peft>=0.18"],
        # LPIPS term of train_bar_vq.py (--lpips_weight): install torchvision from the same index as your torch (a
        # CUDA torchvision wheel does not load with a CPU-only torch), so it is not part of `make install`
        "perceptual": ["lpips>=0.1.4,<0.2", "torchvision"],
        # `bar-hf app` (src/bar_hf/app): the web page
        "app": ["gradio>=6.31"],
        # parameterized: imported by transformers' generic tests (tests/test_transformers_upstream.py); selenium: the
        # browser test of the app (tests/test_app_browser.py, with Debian's chromium + chromium-driver)
        "dev": ["pytest>=8,<10", "ruff>=0.6", "hypothesis>=6.100,<7", "parameterized>=0.9,<1", "selenium>=4.51"],
    },
    entry_points={"console_scripts": ["bar-hf=bar_hf.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
