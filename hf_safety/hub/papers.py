"""The papers behind the methods: title, arXiv id and BibTeX, cited by the trainers (`_paper`, as TRL's trainers do)
and by the cards."""

import textwrap


DERTA_PAPER = {
    "title": "Refuse Whenever You Feel Unsafe: Improving Safety in LLMs via Decoupled Refusal Training",
    "id": "2407.09121",
    # docstyle-ignore
    "citation": textwrap.dedent("""\
        @inproceedings{yuan2025refuse,
            title        = {{Refuse Whenever You Feel Unsafe: Improving Safety in LLMs via Decoupled Refusal Training}},
            author       = {Youliang Yuan and Wenxiang Jiao and Wenxuan Wang and Jen-tse Huang and Jiahao Xu and Tian Liang and Pinjia He and Zhaopeng Tu},
            year         = 2025,
            booktitle    = {Proceedings of the 63rd Annual Meeting of the Association for Computational Linguistics (ACL)},
            eprint       = {arXiv:2407.09121},
        }"""),
}

SEAS_PAPER = {
    "title": "SEAS: Self-Evolving Adversarial Safety Optimization for Large Language Models",
    "id": "2408.02632",
    # docstyle-ignore
    "citation": textwrap.dedent("""\
        @inproceedings{diao2025seas,
            title        = {{SEAS: Self-Evolving Adversarial Safety Optimization for Large Language Models}},
            author       = {Muxi Diao and Rumei Li and Shiyang Liu and Guogang Liao and Jingang Wang and Xunliang Cai and Weiran Xu},
            year         = 2025,
            booktitle    = {Proceedings of the AAAI Conference on Artificial Intelligence},
            eprint       = {arXiv:2408.02632},
        }"""),
}

# docstyle-ignore
TRL_CITATION = textwrap.dedent("""\
    @software{vonwerra2020trl,
        title   = {{TRL: Transformers Reinforcement Learning}},
        author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallouédec, Quentin},
        license = {Apache-2.0},
        url     = {https://github.com/huggingface/trl},
        year    = {2020}
    }""")
