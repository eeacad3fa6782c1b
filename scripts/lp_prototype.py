"""Label-powerset prototype for set decoding (docs/results.md, "Label-set decoding: tried").

A multinomial logistic regression over the label sets seen at least MIN times in training
(TF-IDF of word 1-2-grams and character 1-3-grams of the text, scikit-learn), mixed
log-linearly with a model's calibrated per-label probabilities:
score(S) = log P_independent(S) + g * log P_powerset(S) + beta * log(P_train(S) / P_indep_train(S)),
g and beta chosen on validation for exact match. Reads the predictions `emoknow eval
--predictions` writes:

    emoknow eval --model M --split val --predictions val.jsonl
    emoknow eval --model M --split test --predictions test.jsonl
    python3 scripts/lp_prototype.py val.jsonl test.jsonl [MIN] [C]
"""
import csv, json, numpy as np, sys
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from scipy.sparse import hstack
L=["Love","Joy","Anxiety","Sorrow","Expect","Hate","Surprise","Anger"]
import os
rows=list(csv.reader(open(os.path.join(os.path.dirname(__file__),'..','data','Train.csv'),encoding='gb18030')))[1:]
data={int(r[0]):(r[1], frozenset(eval(r[2]))) for r in rows}
def load(p):
    out={}
    for line in open(p):
        d=json.loads(line); out[d['id']]=np.array([d['probabilities'][l] for l in L])
    return out
val=load(sys.argv[1]); test=load(sys.argv[2])
train_ids=[i for i in data if i>1000 and i not in val]
print(len(train_ids), len(val), len(test))
from collections import Counter
cnt=Counter(data[i][1] for i in train_ids)
MIN=int(sys.argv[3]) if len(sys.argv)>3 else 5
classes=[s for s,c in cnt.most_common() if c>=MIN]
cidx={s:k for k,s in enumerate(classes)}
print('classes',len(classes),'coverage',sum(cnt[s] for s in classes)/len(train_ids))
tr=[i for i in train_ids if data[i][1] in cidx]
wv=TfidfVectorizer(analyzer=lambda t:[w for w in t.split()]+[a+' '+b for a,b in zip(t.split(),t.split()[1:])],sublinear_tf=True,min_df=2)
cv=TfidfVectorizer(analyzer='char',ngram_range=(1,3),sublinear_tf=True,min_df=2)
txt=lambda ids:[data[i][0] for i in ids]
Xtr=hstack([wv.fit_transform(txt(tr)),cv.fit_transform([t.replace(' ','') for t in txt(tr)])]).tocsr()
def X(ids): return hstack([wv.transform(txt(ids)),cv.transform([t.replace(' ','') for t in txt(ids)])]).tocsr()
ytr=[cidx[data[i][1]] for i in tr]
C=float(sys.argv[4]) if len(sys.argv)>4 else 4.0
lp=LogisticRegression(C=C,max_iter=300)
lp.fit(Xtr,ytr)
vids=sorted(val); tids=sorted(test)
Pv=lp.predict_proba(X(vids)); Pt=lp.predict_proba(X(tids))
M=np.array([[1.0 if l in s else 0.0 for l in L] for s in classes])  # K x 8
prior=np.array([cnt[s] for s in classes],float); prior/=prior.sum()
def scores(Q,P,g,beta):
    Q=np.clip(Q,1e-6,1-1e-6)
    li=np.log(Q)@M.T+np.log(1-Q)@(1-M).T  # n x K
    # independent prob of each set under train marginals
    return li+g*np.log(np.clip(P,1e-9,1))+beta*(np.log(prior)-(np.log(marg)@M.T+np.log(1-marg)@(1-M).T))
marg=np.clip(np.array([[1.0 if l in data[i][1] else 0 for l in L] for i in train_ids]).mean(0),1e-6,1-1e-6)
def metrics(ids,pred):
    gold=np.array([[1.0 if l in data[i][1] else 0 for l in L] for i in ids])
    ex=(gold==pred).all(1).mean()
    tp=(gold*pred).sum(); fp=((1-gold)*pred).sum(); fn=(gold*(1-pred)).sum()
    mi=2*tp/(2*tp+fp+fn)
    f=[]
    for j in range(8):
        t=(gold[:,j]*pred[:,j]).sum(); f.append(2*t/max(1,(2*t+((1-gold[:,j])*pred[:,j]).sum()+(gold[:,j]*(1-pred[:,j])).sum())))
    return ex,mi,np.mean(f)
Qv=np.array([val[i] for i in vids]); Qt=np.array([test[i] for i in tids])
print('LP alone val/test', metrics(vids,M[Pv.argmax(1)]), metrics(tids,M[Pt.argmax(1)]))
best=None
for g in [0,0.25,0.5,0.75,1,1.5,2,3]:
    for beta in [0,0.25,0.5,1]:
        sv=scores(Qv,Pv,g,beta); mv=metrics(vids,M[sv.argmax(1)])
        if best is None or mv[0]>best[0]: best=(mv[0],g,beta)
        st=scores(Qt,Pt,g,beta); mt=metrics(tids,M[st.argmax(1)])
        print(f'g {g} beta {beta}: val {mv[0]:.3f}/{mv[1]:.3f}  test {mt[0]:.3f}/{mt[1]:.3f}/{mt[2]:.3f}')
print('best on val',best)
